"""Loading a Keras model file, with one clear error for missing files, custom code and unknown layers."""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from pathlib import Path

from export.errors import ModelLoadError
from export.from_keras.backend import keras

SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(path: Path, unsafe: bool = False) -> keras.Model:
    """Load a ``.keras`` or legacy ``.h5`` model, in safe mode unless ``unsafe``."""
    if not path.exists():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    if path.suffix not in SUFFIXES:
        raise ModelLoadError(
            f"model file {str(path)!r} has suffix {path.suffix!r}; expected a Keras 3 '.keras' "
            "file or a legacy Keras 2 '.h5' file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "lambda" in str(error).lower():
            raise ModelLoadError(
                f"{path} contains a Lambda layer or other custom code that Keras refuses to load "
                "in safe mode; if you trust the file, pass --unsafe"
            ) from error
        raise _unknown_layers_error(path, error) or ModelLoadError(
            f"could not load {path}: {error}") from error
    except Exception as error:  # Keras raises many types for corrupt files
        raise _unknown_layers_error(path, error) or ModelLoadError(
            f"could not load {path} as a Keras model ({type(error).__name__}: {_first_line(error)}); "
            "is it a complete .keras or .h5 file?"
        ) from error


def _first_line(error: Exception) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), "")


def _unknown_layers_error(path: Path, error: Exception) -> ModelLoadError | None:
    """An error naming every layer of an unknown class, if the file's config has any."""
    unknown = unknown_layers(read_config(path))
    if not unknown:
        return None
    listing = ", ".join(f"{name} ({cls})" for name, cls in unknown)
    return ModelLoadError(
        f"{path} uses layer classes that Keras does not know in this process: {listing}. They are "
        "custom code; export from Python instead: import the module that defines them, load the "
        "model and call export.api.build(model, ExportOptions(...)) and export.api.save"
    )


def read_config(path: Path) -> dict | None:
    """The model config stored in a ``.keras`` (zip) or ``.h5`` file, or None if unreadable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as file:
            text = file.attrs.get("model_config")
            return json.loads(text) if text is not None else None
    except (OSError, KeyError, ValueError):
        return None


def unknown_layers(config: dict | None) -> list[tuple[str, str]]:
    """``(layer name, class name)`` of every layer in ``config`` whose class Keras cannot resolve."""
    found: list[tuple[str, str]] = []
    _collect(config, found)
    return found


def _collect(config, found: list[tuple[str, str]]) -> None:
    if isinstance(config, list):
        for item in config:
            _collect(item, found)
        return
    if not isinstance(config, dict):
        return
    for layer in config.get("layers", []) if isinstance(config.get("layers"), list) else []:
        if isinstance(layer, dict) and "class_name" in layer and not _known(layer):
            name = (layer.get("config") or {}).get("name", "?")
            found.append((name, layer["class_name"]))
    for value in config.values():
        _collect(value, found)


def _known(layer: dict) -> bool:
    registered = layer.get("registered_name") or layer["class_name"]
    if registered in keras.saving.get_custom_objects():
        return True
    module, name = layer.get("module") or "", layer["class_name"]
    if module.startswith("keras"):
        try:
            return hasattr(importlib.import_module(module), name)
        except ImportError:
            return False
    if module:
        return False
    return any(hasattr(namespace, name) for namespace in (keras.layers, keras.models, keras))


__all__ = ["load_model", "read_config", "unknown_layers"]
