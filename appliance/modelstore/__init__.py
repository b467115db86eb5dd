"""Model store: build the built-in models from registry packages, import user models, verify what is installed."""

from appliance.modelstore.manifest import Manifest, ModelError
from appliance.modelstore.paths import models_dir

__all__ = ["Manifest", "ModelError", "models_dir"]
