"""Slow tokenizer of the kubechat demo model: a thin wrapper around a sentencepiece model.

Ids: ``<unk>`` = 0 (also the padding token, as in Baichuan-13B), ``<s>`` = 1, ``</s>`` = 2, then the
two role tokens that open a user and an assistant turn. No bos/eos is added by ``encode``; chat
prompts are assembled by ``generation_utils.build_chat_input``.
"""

import os
import shutil
from typing import ClassVar

import sentencepiece as spm
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}

USER_TOKEN = "<reserved_102>"
ASSISTANT_TOKEN = "<reserved_103>"


class KubechatDemoTokenizer(PreTrainedTokenizer):
    """Sentencepiece tokenizer with byte fallback, so any text round-trips through ids."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        unk_token: str = "<unk>",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str = "<unk>",
        user_token: str = USER_TOKEN,
        assistant_token: str = ASSISTANT_TOKEN,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        # The base __init__ already asks for the vocabulary, so the sentencepiece model comes first.
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.user_token = user_token
        self.assistant_token = assistant_token
        extra = list(kwargs.pop("extra_special_tokens", None) or [])
        extra += [t for t in (user_token, assistant_token) if t not in map(str, extra)]
        super().__init__(
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            user_token=user_token,
            assistant_token=assistant_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            extra_special_tokens=extra,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = None
        state["_sp_proto"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        proto = state.pop("_sp_proto")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(model_proto=proto)

    @property
    def vocab_size(self) -> int:
        """Number of pieces in the sentencepiece model (role tokens included)."""
        return self.sp_model.get_piece_size()

    @property
    def user_token_id(self) -> int:
        """Id of the token that opens a user turn."""
        return self.sp_model.piece_to_id(self.user_token)

    @property
    def assistant_token_id(self) -> int:
        """Id of the token that opens an assistant turn."""
        return self.sp_model.piece_to_id(self.assistant_token)

    def get_vocab(self) -> dict[str, int]:
        """Piece -> id for the whole vocabulary."""
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(getattr(self, "_added_tokens_encoder", {}))
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join pieces into text; special tokens that were kept are written out literally."""
        special = set(self.all_special_tokens)
        out: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in special:
                out.append(self.sp_model.decode_pieces(run))
                out.append(token)
                run = []
            else:
                run.append(token)
        out.append(self.sp_model.decode_pieces(run))
        return "".join(out)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """Add bos/eos around each sequence as the ``add_bos_token``/``add_eos_token`` flags say."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        ids = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            ids += bos + token_ids_1 + eos
        return ids

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 for each bos/eos that ``build_inputs_with_special_tokens`` would add, 0 elsewhere."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many bos/eos ids ``build_inputs_with_special_tokens`` adds."""
        per_sequence = int(self.add_bos_token) + int(self.add_eos_token)
        return per_sequence * (2 if pair else 1)

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str]:
        """Write ``tokenizer.model`` into ``save_directory``."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"vocabulary path ({save_directory}) should be a directory")
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        target = os.path.join(save_directory, name)
        source = self.vocab_file
        if source and os.path.isfile(source):
            if os.path.abspath(source) != os.path.abspath(target):
                shutil.copyfile(source, target)
        else:
            with open(target, "wb") as f:
                f.write(self.sp_model.serialized_model_proto())
        return (target,)
