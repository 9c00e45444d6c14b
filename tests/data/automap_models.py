"""Torch models written by "a user", for tests/test_automap.py: nothing here knows tf2pt's mappings.

* :func:`deepbrain_style_unet` -- deepbrain's U-Net in another style than
  ``tf2pt.models.deepbrain.DeepBrainUNet``: other attribute names, module lists, the decoder
  registered before the encoder, deepest level first.
* :class:`TieNet` -- two same-shape 3x3 convolutions registered in the opposite order to the
  order they run in.
* :func:`monai_highresnet` -- MONAI's HighResNet configured as NiftyNet's, its final activation
  replaced by Identity (NiftyNet outputs logits).
"""

import torch
import torch.nn.functional as F
from torch import nn

from tf2pt.nn import ConvTranspose3dSame


class _Level(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.b = nn.Conv3d(cout, cout, 3, padding=1)  # runs second, registered first
        self.a = nn.Conv3d(cin, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x))))


class OtherUNet(nn.Module):
    def __init__(self, channels=(8, 16, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self.classifier = nn.Conv3d(c1, 1, kernel_size=1)
        self.merge = nn.ModuleList([nn.Conv3d(2 * c3, c3, 3, padding=1), nn.Conv3d(2 * c2, c2, 3, padding=1),
                                    nn.Conv3d(2 * c1, c1, 3, padding=1)])  # deepest first
        self.upsample = nn.ModuleList([ConvTranspose3dSame(c3, c3, 3, stride=2, bias=False),
                                       ConvTranspose3dSame(c3, c2, 3, stride=2, bias=False),
                                       ConvTranspose3dSame(c2, c1, 3, stride=2, bias=False)])
        self.down = nn.ModuleList([_Level(1, c1), _Level(c1, c2), _Level(c2, c3)])

    def forward(self, x):
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = F.max_pool3d(x, 2)
        for up, merge, skip in zip(self.upsample, self.merge, reversed(skips)):
            x = F.relu(merge(torch.cat([up(x), skip], dim=1)))
        return torch.sigmoid(self.classifier(x))


def deepbrain_style_unet():
    return OtherUNet()


class TieNet(nn.Module):
    """3x3x3 convs stem (1->4) -> first (4->4) -> second (4->4) -> head (4->2); ``second`` is
    registered first."""

    def __init__(self, channels=4, classes=2):
        super().__init__()
        self.second = nn.Conv3d(channels, channels, 3, padding=1)
        self.first = nn.Conv3d(channels, channels, 3, padding=1)
        self.stem = nn.Conv3d(1, channels, 3, padding=1)
        self.head = nn.Conv3d(channels, classes, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.first(x))
        x = F.relu(self.second(x))
        return self.head(x)


def monai_highresnet(in_channels=1, num_classes=160):
    from monai.networks.nets import HighResNet

    model = HighResNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                       norm_type=("batch", {"affine": True, "eps": 1e-5}), acti_type=("relu", {"inplace": False}),
                       dropout_prob=0.0, bias=False, channel_matching="pad")
    model.blocks[-1].adn.A = nn.Identity()
    return model


class SmallKerasLikeNet(nn.Module):
    """conv (2->4, 3x3) -> batch norm -> global average pool -> linear (4->3)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, eps=1e-3))
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class BNTieNet(nn.Module):
    """stem conv -> early BN -> mid conv -> late BN -> head; ``late`` is registered first."""

    def __init__(self, channels=4, classes=2):
        super().__init__()
        self.late = nn.BatchNorm3d(channels, eps=1e-3)
        self.early = nn.BatchNorm3d(channels, eps=1e-3)
        self.stem = nn.Conv3d(1, channels, 3, padding=1)
        self.mid = nn.Conv3d(channels, channels, 3, padding=1)
        self.head = nn.Conv3d(channels, classes, 1)

    def forward(self, x):
        x = F.relu(self.early(self.stem(x)))
        x = F.relu(self.late(self.mid(x)))
        return self.head(x)
