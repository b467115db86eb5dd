"""Whisper front end in numpy: the mel filters and log-mel equal Whisper's (via transformers' reference), and the
decoding-loop detector is exact. Pure functions: fast, no model."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.asr import features
from appliance.asr.whisper import compression_ratio, ends_in_loop


def test_mel_filters_equal_slaney_reference():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney").T
    np.testing.assert_allclose(features.mel_filters(80), ref, atol=1e-7)
    assert features.mel_filters(128).shape == (128, 201)


def test_log_mel_equals_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    audio = (np.random.RandomState(0).randn(3 * 16000) * 0.1).astype(np.float32)
    ref = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    full = features.log_mel(audio, 80, frames=3000)
    np.testing.assert_allclose(full, ref, atol=1e-4)
    # the audio's own length is the same frames as Whisper's padded 30 s, cut
    own = features.log_mel(audio, 80)
    assert own.shape == (80, 300)
    np.testing.assert_allclose(own, full[:, :300], atol=1e-5)


@pytest.mark.parametrize("tokens, loop", [
    ([1, 2, 3, 4, 1, 2, 3, 4], 4),
    ([9, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5], 5),
    ([1, 2, 3, 1, 2, 3], 0),  # shorter than LOOP_MIN_TOKENS: "no no", "bye bye" are speech
    ([1, 2, 3, 4, 5, 1, 2, 3, 4], 0),
    ([], 0),
])
def test_ends_in_loop(tokens, loop):
    assert ends_in_loop(tokens) == loop


def test_compression_ratio_flags_repetition():
    assert compression_ratio("") == 0.0
    assert compression_ratio("the quick brown fox jumps over the lazy dog") < 1.5
    assert compression_ratio("thank you " * 30) > 2.4  # Whisper's own fallback threshold
