"""diffuse: a PyTorch toolkit for diffusion models."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_pipeline"]


def load_pipeline(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """Load a text-to-image pipeline (default: the bundled model); see
    `diffuse.pipelines.text_to_image.load_pipeline`."""
    from diffuse.pipelines.text_to_image import load_pipeline as load

    return load(*args, **kwargs)
