"""A search space of your own: a small CNN where each layer picks kernel 3 or 5 and width 16 or 32.

    nasforge search --space examples/my_cnn.py:MyCNN --strategy darts   # or gdas, proxyless, evolution
"""

from torch import nn

from nasforge.nn import Choose, ValueChoice


def block(c_in: int, kernel: int, width: int, c_out: int = 32) -> nn.Module:
    """conv kxk to ``width`` channels, then 1x1 back to ``c_out`` (so every choice keeps the shape)."""
    return nn.Sequential(nn.Conv2d(c_in, width, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(), nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class MyCNN(nn.Module):
    def __init__(self, input_shape=(1, 8, 8), num_classes=10, layers=3):
        super().__init__()
        self.features = nn.Sequential(*(
            Choose(block, c_in=input_shape[0] if i == 0 else 32,
                   kernel=ValueChoice(f"layer{i}.kernel", [3, 5]), width=ValueChoice(f"layer{i}.width", [16, 32]))
            for i in range(layers)))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))
