"""Speech recognition: Whisper on onnxruntime (numpy + onnxruntime + tokenizers; never torch)."""

from appliance.asr.whisper import Transcription, WhisperModel, smoke_test

__all__ = ["WhisperModel", "Transcription", "smoke_test"]
