"""The residual bottleneck block shared by the OCBE and the student decoder.

``Bottleneck(c_in, width, c_out, stride)``: 1x1 conv -> 3x3 conv (stride) ->
1x1 conv, BatchNorm after each, ReLU between, plus a shortcut. With
``upsample=True`` the middle conv is a ConvTranspose2d(k=2, s=2) and the
shortcut a ConvTranspose2d too: the decoder's "reverse" block of RD4AD.
Widths are explicit so the same block serves teachers of any width; for
Wide-ResNet-50-2, ``width = 2 * planes`` and ``c_out = 4 * planes``.

:func:`init_public` is the public code's initialisation of OCBE and decoder.
"""

from __future__ import annotations

from torch import Tensor, nn


def init_public(module: nn.Module) -> None:
    """Initialise ``module`` as the public RD4AD / RD++ code does its OCBE and decoder.

    Every ``nn.Conv2d``: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``,
    i.e. N(0, 2 / (C_out * k * k)); every BatchNorm: weight 1, bias 0. The
    ``ConvTranspose2d`` layers keep PyTorch's default (they are not
    ``nn.Conv2d``, as in the public code, whose loop tests ``isinstance``).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class Bottleneck(nn.Module):
    """``[B,c_in,H,W] -> [B,c_out,H',W']``; H' = H/stride, or 2H with ``upsample``."""

    def __init__(
        self, c_in: int, width: int, c_out: int, stride: int = 1, upsample: bool = False, out_relu: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if upsample:
            self.conv2 = nn.ConvTranspose2d(width, width, kernel_size=2, stride=2, bias=False)
        else:
            self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.out_relu = out_relu
        self.shortcut: nn.Module | None = None
        if upsample:
            self.shortcut = nn.Sequential(
                nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2, bias=False), nn.BatchNorm2d(c_out)
            )
        elif stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(out) if self.out_relu else out
