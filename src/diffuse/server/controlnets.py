"""The ControlNets a server offers: each folder given to `diffuse serve --controlnet`, loaded
next to the served model it was built for."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from diffuse.nets.controlnet import ControlNet
from diffuse.pipelines.control import load_controlnet
from diffuse.pipelines.text_to_image import TextToImagePipeline

__all__ = ["ServedControlNet", "load_controlnets"]


@dataclass(frozen=True)
class ServedControlNet:
    """A loaded ControlNet and the served model it steers.

    Attributes:
        name: what requests call it (the folder's name).
        folder: the folder as given (stored in each PNG, as `diffuse generate` stores it).
        model: the name of the served model it was built for.
        net: the network.
    """

    name: str
    folder: str
    model: str
    net: ControlNet

    @property
    def kind(self) -> str:
        """The control kind it reads ("edges", "layout")."""
        return self.net.config.kind


def load_controlnets(
    folders: Iterable[str | os.PathLike], pipes: Mapping[str, TextToImagePipeline]
) -> list[ServedControlNet]:
    """Load each ControlNet folder for the served model it was built for.

    Raises:
        FileNotFoundError: a folder holds no ControlNet.
        ValueError: a folder built for none of the served models (its reasons named), two
            folders of one name.
    """
    served: list[ServedControlNet] = []
    for folder in folders:
        name = Path(folder).resolve().name
        if any(s.name == name for s in served):
            raise ValueError(f"two ControlNet folders are named {name!r}; serve each name once")
        reasons = []
        for model, pipe in pipes.items():
            try:
                net = load_controlnet(folder, pipe.model)
            except ValueError as err:
                reasons.append(str(err))
                continue
            served.append(ServedControlNet(name, str(folder), model, net))
            break
        else:
            raise ValueError(f"no served model fits ControlNet {folder}: {'; '.join(reasons)}")
    return served
