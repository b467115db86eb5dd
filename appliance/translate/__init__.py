"""Machine translation on ONNX (Bergamot/Marian SSRU models and imported OPUS-MT), no torch at run time."""

from appliance.translate.facts import TranslationModelError
from appliance.translate.translator import Translator, smoke_test

__all__ = ["Translator", "TranslationModelError", "smoke_test"]
