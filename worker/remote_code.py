"""Code a checkpoint ships (``trust_remote_code``): where its failures come from, what to change
for known breakage, and one compatibility step.

transformers imports a checkpoint's own modules as ``transformers_modules.<name>.<file>``, so a
traceback frame in such a file is the checkpoint's code, not ours or transformers'. A failure
raised there is described with its exception type, file, line and statement, and, for breakage
known here, what to change in that file.

Known breakage: a slow tokenizer whose ``__init__`` calls ``super().__init__()`` before it loads
its sentencepiece model into ``self.sp_model`` (Baichuan-13B-Chat's tokenizer as first published,
and others derived from early Llama code). transformers 4.34 and later read the vocabulary inside
``super().__init__()``, which then fails (transformers 5: ``TypeError: 'property' object cannot be
interpreted as an integer``; 4.x: ``AttributeError: ... has no attribute 'sp_model'``). The
compatibility step loads such a tokenizer unchanged through a subclass that loads ``sp_model``
first, then runs the class's own ``__init__``; the worker logs that it did.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

REMOTE_CODE_PACKAGE = "transformers_modules"  # where transformers imports a checkpoint's code
REASON = "RemoteCodeIncompatible"  # the ModelLoadError reason of a failure in remote code


def is_remote_code(cls: type) -> bool:
    """Whether ``cls`` was defined by a checkpoint's own code."""
    return cls.__module__.split(".")[0] == REMOTE_CODE_PACKAGE


def where_raised(err: BaseException) -> str:
    """``Type: message`` and, when the traceback has one, the file, line and statement it came
    from (the innermost frame in remote code, else the innermost frame)."""
    frames = traceback.extract_tb(err.__traceback__)
    remote = [f for f in frames if _in_remote_code(f.filename)]
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    frame = (remote or frames or [None])[-1]
    if frame is None:
        return text
    place = f"{Path(frame.filename).name}, line {frame.lineno}, in {frame.name}"
    statement = f": {frame.line.strip()}" if frame.line else ""
    return f"{text} ({place}{statement})"


def remote_code_failure(err: BaseException) -> str | None:
    """What a failure raised in a checkpoint's own code was, and what to change; None when the
    traceback never enters remote code."""
    if not any(_in_remote_code(f.filename) for f in traceback.extract_tb(err.__traceback__)):
        return None
    tokenizer = _tokenizer_under_construction(err.__traceback__)
    if tokenizer is not None and calls_super_before_sp_model(type(tokenizer)):
        return f"{where_raised(err)}; {sp_model_fix(type(tokenizer))}"
    import transformers

    return (
        f"{where_raised(err)}; the checkpoint's own code does not run with transformers "
        f"{transformers.__version__}: use a revision of the checkpoint made for it "
        "(spec.model.revision), or fix that file"
    )


def sp_model_fix(cls: type) -> str:
    """What to change in a tokenizer that loads ``sp_model`` after ``super().__init__()``."""
    file = Path(inspect.getsourcefile(cls) or "the tokenizer file").name
    return (
        f"{cls.__name__}.__init__ in {file} calls super().__init__() before it loads "
        "self.sp_model, and transformers >= 4.34 reads the vocabulary inside super().__init__(): "
        "move the lines that create and load self.sp_model above the super().__init__() call "
        "(as later revisions of Baichuan's tokenizer do)"
    )


def calls_super_before_sp_model(cls: type) -> bool:
    """Whether ``cls`` (or the remote-code class that defines its ``__init__``) calls
    ``super().__init__(`` before its first assignment to ``self.sp_model``."""
    init = inspect.getattr_static(cls, "__init__", None)
    try:
        source = inspect.getsource(init) if inspect.isfunction(init) else ""
    except (OSError, TypeError):
        return False
    first_super, first_load = source.find("super().__init__("), source.find("self.sp_model =")
    return 0 <= first_super < first_load


def load_tokenizer_with_sp_model_first(err: BaseException, load: Any) -> Any:
    """The compatibility step: when ``err`` is the known ``sp_model`` breakage of a remote-code
    tokenizer, load that tokenizer again through a subclass that loads ``sp_model`` first
    (``load(cls)`` must call ``cls.from_pretrained``) and return it; else raise ``err``."""
    tokenizer = _tokenizer_under_construction(err.__traceback__)
    if tokenizer is None or not calls_super_before_sp_model(type(tokenizer)):
        raise err
    cls = type(tokenizer)
    log.warning(
        "%s; loading it unchanged through a subclass that loads sp_model before %s.__init__ runs",
        sp_model_fix(cls),
        cls.__name__,
    )
    try:
        return load(with_sp_model_first(cls))
    except Exception as retry:
        log.warning("the compatibility step failed too: %s", where_raised(retry))
        raise err from None


def with_sp_model_first(cls: type) -> type:
    """A subclass of the sentencepiece tokenizer ``cls`` (same name and module) whose
    ``__init__`` loads ``self.sp_model`` from ``vocab_file`` with ``sp_model_kwargs``, then runs
    ``cls.__init__`` as written."""
    import sentencepiece as spm

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        vocab_file = kwargs.get("vocab_file", args[0] if args else None)
        self.sp_model = spm.SentencePieceProcessor(**(kwargs.get("sp_model_kwargs") or {}))
        self.sp_model.Load(vocab_file)
        cls.__init__(self, *args, **kwargs)

    namespace = {"__init__": __init__, "__module__": cls.__module__, "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), namespace)


def _in_remote_code(filename: str) -> bool:
    return REMOTE_CODE_PACKAGE in Path(filename).parts


def _tokenizer_under_construction(tb: TracebackType | None) -> Any:
    """The ``self`` of the outermost remote-code ``__init__`` in the traceback whose object
    has no ``sp_model`` yet, or None."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__" and _in_remote_code(frame.f_code.co_filename):
            obj = frame.f_locals.get("self")
            if obj is not None and "sp_model" not in vars(obj):
                return obj
        tb = tb.tb_next
    return None
