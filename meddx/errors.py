"""The errors meddx shows to people.

`InputError` carries a message that is safe to show to the person who sent the input (it never holds
patient data); `ModelError` says that a model cannot be loaded and how to fix that; `BudgetExceeded` says
that a request ran out of its time budget and what to ask for instead.
"""


class MeddxError(Exception):
    """Base class: the message is written for a human and is safe to display."""


class InputError(MeddxError, ValueError):
    """A bad upload, notes or option. The message says what was wrong and what is accepted."""


class ModelError(MeddxError, RuntimeError):
    """A model or trained head cannot be loaded. The message says how to fix it."""


class DataFileError(MeddxError, ValueError):
    """A data file shipped with meddx (``meddx/data/*.yaml``) holds a bad value. The message names the file
    and the key."""


class BudgetExceeded(MeddxError, TimeoutError):
    """A request used up its time budget and was stopped between two steps. The message says what to try."""


EXIT_INPUT = 2
"""Exit status of a command (the CLI, ``app.py``) stopped by bad input."""
EXIT_MODEL = 3
"""Exit status of a command stopped by a model, head or other setup problem."""


def exit_status(exc: MeddxError) -> int:
    """The one error-to-exit-status map: `EXIT_INPUT` for an `InputError`, `EXIT_MODEL` for the rest."""
    return EXIT_INPUT if isinstance(exc, InputError) else EXIT_MODEL
