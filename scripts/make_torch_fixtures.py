"""Make the PyTorch fixtures of ``tests/data/torch``: small dropout classifiers exported to ONNX by
the ways a PyTorch user gets there, with PyTorch's own numbers beside them.

Run in a separate environment with PyTorch (the project itself never imports it)::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx==1.23.2 onnxscript \
        scikit-learn scikit-image
    /tmp/torchenv/bin/python scripts/make_torch_fixtures.py tests/data/torch

``--resnet18 DIR`` also writes torchvision's ResNet18 with a dropout head to DIR (45 MB: checked by
hand, not committed).

For every model it writes ``NAME.onnx`` (the dynamo export also ``NAME.onnx.data``) and
``NAME.npz``: ``pixels`` (uint8, 0..255, ``[N, H, W, C]``, what mcd-score decodes: scikit-learn's
digits for the MLP, scikit-image's photographs resized by Pillow for the others), ``inputs``
(float32, NCHW, the pixels preprocessed as the export is told to), ``eval`` (PyTorch's output with
every dropout off, after the head's activation), and ``mc_mean``/``mc_std`` (PyTorch's own MC dropout:
the same model with dropout on, ``PASSES`` forward passes, after the activation). The tests compare
the exported graph with these numbers, which nothing in the project computed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PASSES = 2000
IMAGES = 4
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Mlp(nn.Module):
    """The classic recipe: ``F.dropout(..., training=True)`` in ``forward`` (8x8 grayscale digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.dropout(F.relu(self.fc1(x)), p=0.5, training=True)
        return self.fc2(x)


class Cnn(nn.Module):
    """BatchNorm and a dropout head; exported with only the dropout module in ``train()``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.drop(self.features(x)))


class RandomMask(nn.Module):
    """Dropout written by hand as random ops and a comparison: the export must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x * (torch.rand_like(x) > 0.5).float() * 2.0)


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Running statistics and affine parameters far from the defaults, so that a BatchNorm
    computed in training mode (batch statistics) would give other numbers than inference."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)


def spread_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Untrained torchvision weights give every image the same output (0.5 after a sigmoid, to
    float precision): BatchNorm statistics and linear weights drawn wide enough that images
    differ and dropout shows."""
    randomise_batchnorm(model, generator)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fan_in = module.weight.shape[1]
            module.weight.data.copy_(torch.randn(module.weight.shape, generator=generator)
                                     * (2.0 / fan_in) ** 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def enable_dropout(model: nn.Module) -> nn.Module:
    """The usual recipe: ``eval()``, then every dropout module back in ``train()``."""
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    return model


def disable_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


def export(model, example, path: Path, dynamo: bool = False, training=None, opset: int = 17):
    kwargs = dict(input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if dynamo:
        torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: "batch"},),
                          external_data=True)
    else:
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          training=training or torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False, **kwargs)


def numbers(model_on, model_off, inputs, head) -> dict[str, np.ndarray]:
    activation = {"softmax": lambda z: torch.softmax(z, -1), "sigmoid": torch.sigmoid,
                  "linear": lambda z: z}[head]
    with torch.no_grad():
        off = activation(model_off(inputs)).numpy()
        passes = torch.stack([activation(model_on(inputs)) for _ in range(PASSES)]).double()
    return {"eval": off.astype(np.float32), "mc_mean": passes.mean(0).numpy(),
            "mc_std": passes.std(0, unbiased=False).numpy()}


def pixels_and_inputs(shape, mean=None, std=None):
    """Real images at the model's size: digits for one 8x8 channel, else photographs."""
    channels, height, width = shape
    if channels == 1:
        from sklearn.datasets import load_digits

        digits = load_digits().images[:IMAGES]
        pixels = np.round(digits * (255.0 / 16.0)).astype(np.uint8)[..., None]
    else:
        import skimage.data
        from PIL import Image

        pixels = np.stack([photo(getattr(skimage.data, name)(), height, width, Image)
                           for name in PHOTOS])
    x = pixels.astype(np.float32) / 255.0
    if mean is not None:
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return pixels, np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def photo(image: np.ndarray, height: int, width: int, image_module) -> np.ndarray:
    """The central square of a photograph, resized to ``height x width`` RGB uint8."""
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image_module.fromarray(image[top:top + side, left:left + side]).convert("RGB")
    return np.asarray(square.resize((width, height), image_module.BILINEAR), dtype=np.uint8)


def digits_mlp() -> Mlp:
    """The MLP trained briefly on scikit-learn's digits (pixels 0..16 read as 0..255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images.reshape(-1, 64) / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    model = Mlp()
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--resnet18", type=Path, help="also write ResNet18 (45 MB) here")
    arguments = parser.parse_args()
    out = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    manifest = {"torch": torch.__version__, "passes": PASSES, "models": {}}

    def save(name, model_on, model_off, inputs, pixels, head, **info):
        np.savez_compressed(out / f"{name}.npz", pixels=pixels, inputs=inputs,
                            **numbers(model_on, model_off, torch.tensor(inputs), head))
        manifest["models"][name] = {"head": head, **info}

    # 1. F.dropout(training=True) in forward, TorchScript exporter.
    mlp = digits_mlp()
    pixels, inputs = pixels_and_inputs((1, 8, 8))
    export(mlp, torch.tensor(inputs), out / "mlp.onnx")

    class MlpOff(nn.Module):
        def forward(self, x):
            return mlp.fc2(F.relu(mlp.fc1(torch.flatten(x, 1))))
    save("mlp", mlp, MlpOff(), inputs, pixels, "softmax", recipe="F.dropout(training=True)",
         exporter="torchscript", logits=True)

    # 2. eval() + dropout modules in train(), TrainingMode.PRESERVE, TorchScript exporter.
    cnn = Cnn()
    randomise_batchnorm(cnn, generator)
    pixels, inputs = pixels_and_inputs((3, 32, 32), IMAGENET_MEAN, IMAGENET_STD)
    export(enable_dropout(cnn), torch.tensor(inputs), out / "cnn.onnx")
    off = disable_dropout(Cnn())
    off.load_state_dict(cnn.state_dict())
    off.eval()
    save("cnn", enable_dropout(cnn), off, inputs, pixels, "softmax",
         recipe="eval() + Dropout.train()", exporter="torchscript", logits=True,
         preprocessing="torchvision")

    # 3. The same with the dynamo exporter (weights in cnn_dynamo.onnx.data).
    export(enable_dropout(cnn), torch.tensor(inputs), out / "cnn_dynamo.onnx", dynamo=True)
    save("cnn_dynamo", enable_dropout(cnn), off, inputs, pixels, "softmax",
         recipe="eval() + Dropout.train()", exporter="dynamo", logits=True,
         preprocessing="torchvision")

    # 4. Exported with model.train(): BatchNormalization in training mode too.
    cnn.train()
    export(cnn, torch.tensor(inputs), out / "cnn_train_bn.onnx",
           training=torch.onnx.TrainingMode.TRAINING)
    # exporting in training mode ran a forward pass that updated the running statistics the
    # graph holds: PyTorch's inference reference is the model as it is after the export
    off = disable_dropout(Cnn())
    off.load_state_dict(cnn.state_dict())
    off.eval()
    save("cnn_train_bn", enable_dropout(cnn), off, inputs, pixels, "softmax",
         recipe="model.train(), TrainingMode.TRAINING", exporter="torchscript", logits=True,
         preprocessing="torchvision")

    # 5. torchvision's MobileNetV3 (small, narrow), dropout in its classifier, a sigmoid head.
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3, width_mult=0.5)
    spread_weights(net, generator)
    net.eval()
    pixels, inputs = pixels_and_inputs((3, 64, 64), IMAGENET_MEAN, IMAGENET_STD)

    class WithSigmoid(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return torch.sigmoid(self.body(x))
    head = WithSigmoid(net)
    export(enable_dropout(head), torch.tensor(inputs), out / "mobilenet_v3.onnx")
    off = WithSigmoid(disable_dropout(torchvision.models.mobilenet_v3_small(
        weights=None, num_classes=3, width_mult=0.5)))
    off.body.load_state_dict(net.state_dict())
    off.eval()
    save("mobilenet_v3", enable_dropout(head), off, inputs, pixels, "linear",
         recipe="eval() + Dropout.train()", exporter="torchscript", logits=False,
         preprocessing="torchvision", note="numbers after the model's own sigmoid")

    # 6. Dropout written as random ops: refused.
    pixels, inputs = pixels_and_inputs((1, 8, 8))
    export(RandomMask(), torch.tensor(inputs), out / "random_mask.onnx")
    manifest["models"]["random_mask"] = {"recipe": "x * (rand_like(x) > p)", "refused": True}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if arguments.resnet18:
        resnet18(arguments.resnet18, generator)


def resnet18(out: Path, generator: torch.Generator) -> None:
    """torchvision's ResNet18 (weights=None) with a dropout head, enable-dropout recipe."""
    import torchvision

    out.mkdir(parents=True, exist_ok=True)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    net.fc = nn.Sequential(nn.Dropout(0.3), net.fc)
    spread_weights(net, generator)
    pixels, inputs = pixels_and_inputs((3, 64, 64), IMAGENET_MEAN, IMAGENET_STD)
    export(enable_dropout(net), torch.tensor(inputs), out / "resnet18.onnx")
    off = torchvision.models.resnet18(weights=None, num_classes=4)
    off.fc = nn.Sequential(nn.Dropout(0.3), off.fc)
    off.load_state_dict(net.state_dict())
    off.eval()
    np.savez_compressed(out / "resnet18.npz", pixels=pixels, inputs=inputs,
                        **numbers(enable_dropout(net), off, torch.tensor(inputs), "softmax"))


if __name__ == "__main__":
    main()
