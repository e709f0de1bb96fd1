"""Choice modules: write a search space once, as a PyTorch network (see ``nasforge.nn.choices``)."""

from nasforge.nn.choices import (
    ChoiceModule,
    Choose,
    Hard,
    InputChoice,
    NodeChoice,
    OpChoice,
    Paths,
    Soft,
    ValueChoice,
    Zero,
    choice_modules,
    declarations,
    fixed_arch,
    is_zero,
)

__all__ = ["ChoiceModule", "Choose", "Hard", "InputChoice", "NodeChoice", "OpChoice", "Paths", "Soft",
           "ValueChoice", "Zero", "choice_modules", "declarations", "fixed_arch", "is_zero"]
