"""Plain PyTorch models for the Keras fixtures (tf2pt.testing.keras_fixtures), written as a user
would write them, for tests/test_automap_keras.py: only torch modules, other attribute names than
the Keras layers', and a registration order that differs from the order they run in. Nothing here
knows tf2pt or its mappings.

* :class:`ConvNet` -- Keras' ``cnn``: Conv2D (3x3, stride 2, SAME: TF pads 0 before and 1 after,
  so a ``ZeroPad2d`` and an unpadded conv), ReLU, BatchNorm, Flatten, Linear/Tanh/Linear.
* :class:`SeparableNet` -- Keras' ``sep``: a depthwise conv (3 channels x 2), BatchNorm, ReLU,
  a separable conv as two convs (depthwise 6 x 1, pointwise 6->8), BatchNorm, global average
  pooling, Linear.
* :class:`TextNet` -- Keras' ``rnn``: Embedding, bidirectional LSTM, GRU, Linear on the last state.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, in_channels=2, filters=4, hidden=6, classes=3, size=8):
        super().__init__()
        out = size // 2
        self.classifier = nn.Sequential(nn.Linear(filters * out * out, hidden), nn.Tanh(), nn.Linear(hidden, classes))
        self.norm = nn.BatchNorm2d(filters, eps=1e-3)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # TF's SAME for an even size, kernel 3, stride 2
        self.conv = nn.Conv2d(in_channels, filters, 3, stride=2)

    def forward(self, x):
        x = self.norm(F.relu(self.conv(self.pad(x))))
        return self.classifier(torch.flatten(x, 1))


class SeparableNet(nn.Module):
    def __init__(self, in_channels=3, multiplier=2, filters=8, classes=3):
        super().__init__()
        mid = in_channels * multiplier
        self.pointwise = nn.Conv2d(mid, filters, 1)
        self.separable = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.depthwise = nn.Conv2d(in_channels, mid, 3, padding=1, groups=in_channels, bias=False)
        self.bn = nn.ModuleList([nn.BatchNorm2d(mid, eps=1e-3), nn.BatchNorm2d(filters, eps=1e-3)])
        self.fc = nn.Linear(filters, classes)

    def forward(self, x):
        x = F.relu(self.bn[0](self.depthwise(x)))
        x = self.bn[1](self.pointwise(self.separable(x)))
        return self.fc(x.mean(dim=(2, 3)))


class TextNet(nn.Module):
    def __init__(self, vocab=11, dim=4, units=3, gru_units=2, classes=2):
        super().__init__()
        self.out = nn.Linear(gru_units, classes)
        self.gru = nn.GRU(2 * units, gru_units, batch_first=True)
        self.encoder = nn.LSTM(dim, units, batch_first=True, bidirectional=True)
        self.embed = nn.Embedding(vocab, dim)

    def forward(self, ids):
        h, _ = self.encoder(self.embed(ids))
        _, last = self.gru(h)
        return self.out(last[-1])


class ConvNetChannelsLast(ConvNet):
    """:class:`ConvNet` flattening the map channels-last, as Keras does: its Linear takes the
    Keras kernel as it is (``dense``)."""

    def forward(self, x):
        x = self.norm(F.relu(self.conv(self.pad(x))))
        return self.classifier(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))
