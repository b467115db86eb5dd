import pytest

from appliance.providers import CPU, choose_providers, open_session, openvino_device, provider_options

CUDA, OV, COREML = "CUDAExecutionProvider", "OpenVINOExecutionProvider", "CoreMLExecutionProvider"


@pytest.mark.parametrize(
    "preferred, available, expected",
    [
        (["cuda", "cpu"], [CUDA, CPU], [CUDA, CPU]),
        (["cuda", "openvino", "cpu"], [OV, CPU], [OV, CPU]),
        (["coreml"], [CPU], [CPU]),
        ([], [CUDA, CPU], [CPU]),
        (["openvino", "cuda"], [CUDA, OV, CPU], [OV, CUDA, CPU]),
        ([CUDA, "cuda"], [CUDA, CPU], [CUDA, CPU]),
        (["cpu", "cuda"], [CUDA, CPU], [CPU, CUDA]),
    ],
)
def test_choose_providers(preferred, available, expected):
    assert choose_providers(preferred, available) == expected


def test_open_session_skips_providers_onnxruntime_lacks(built_model):
    sess = open_session(built_model("silero-vad") / "silero_vad.onnx", ["cuda", "openvino", "cpu"], threads=1)
    assert sess.get_providers()[0] == CPU


def test_open_session_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx.*appliance models build"):
        open_session(tmp_path / "missing.onnx")


@pytest.mark.parametrize("devices, expected", [
    (["CPU"], "CPU"),
    ([], "CPU"),
    (["CPU", "GPU"], "GPU"),
    (["CPU", "GPU.1", "GPU.0"], "GPU.0"),  # the integrated GPU comes first
    (["CPU", "NPU"], "CPU"),  # the NPU wants static shapes
    (["NPU", "GPU", "CPU"], "GPU"),
])
def test_openvino_device(devices, expected):
    assert openvino_device(devices) == expected


def test_provider_options_leave_the_others_alone():
    assert provider_options(CPU) == {} and provider_options(CUDA) == {}
