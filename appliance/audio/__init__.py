"""Audio sources: live microphone capture (PortAudio) and file replay, both normalised to 16 kHz mono float32."""

from appliance.audio.base import SR, AudioError, AudioSource
from appliance.audio.file import FileSource, load_audio
from appliance.audio.mic import InputDevice, MicrophoneSource, list_input_devices, pick_device

__all__ = ["SR", "AudioError", "AudioSource", "FileSource", "load_audio", "InputDevice", "MicrophoneSource",
           "list_input_devices", "pick_device"]
