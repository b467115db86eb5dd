import pytest

from appliance.providers import CPU, choose_providers, open_session

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
