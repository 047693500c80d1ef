"""ResNet-8 (He et al. 2016, the CIFAR variant) for MCE-PL, defined outside the mcepl package.

A 3x3 stem, three stages of one basic block (16, 32, 64 channels), global average pooling, one
linear layer. GroupNorm instead of BatchNorm: with each node's own label mix, batch statistics
differ from node to node and from training to test (Hsieh et al., "The Non-IID Data Quagmire of
Decentralized Machine Learning", ICML 2020); GroupNorm has no running statistics. It is
non-affine: only masked weights learn, so a scale and shift would stay at 1 and 0 anyway.
"""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(4, channels, affine=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = group_norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          group_norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  group_norm(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet8(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The factory mcepl calls: any C x H x W input, `num_classes` logits."""
    return SmallResNet(input_shape[0], num_classes)
