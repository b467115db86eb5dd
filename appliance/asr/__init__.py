"""Speech recognition: Whisper on onnxruntime (numpy + onnxruntime + tokenizers; never torch)."""

from appliance.asr.whisper import Aborted, Transcription, WhisperModel, smoke_test

__all__ = ["Aborted", "WhisperModel", "Transcription", "smoke_test"]
