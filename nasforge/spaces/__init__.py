"""Search spaces. Importing this package registers the built-in spaces."""

from nasforge.spaces.base import (
    SPACES,
    Choice,
    InputChoice,
    OpChoice,
    SearchSpace,
    ValueChoice,
    get_space_class,
    make_space,
    register_space,
    space_names,
)
from nasforge.spaces import darts  # noqa: F401  (registers the space)
from nasforge.spaces import dense  # noqa: F401  (registers the space)
from nasforge.spaces import mbconv  # noqa: F401  (registers the space)
from nasforge.spaces import layers  # noqa: F401  (registers the space)
from nasforge.spaces import nb201  # noqa: F401  (registers the space)

__all__ = [
    "SPACES", "Choice", "InputChoice", "OpChoice", "SearchSpace", "ValueChoice",
    "get_space_class", "make_space", "register_space", "space_names",
]
