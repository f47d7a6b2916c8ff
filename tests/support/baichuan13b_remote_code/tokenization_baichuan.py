"""Tokenizer of the tiny Baichuan-13B-layout test checkpoint, shaped like Baichuan's as first
published (written here): ``__init__`` calls ``super().__init__()`` first and loads the
sentencepiece model into ``self.sp_model`` only afterwards. transformers 4.34 and later ask for
the vocabulary inside ``super().__init__()``, so on its own this class fails to construct there
(transformers 5: ``TypeError: 'property' object cannot be interpreted as an integer``).
"""

import os
from shutil import copyfile

import sentencepiece as spm
from transformers.tokenization_utils import AddedToken, PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}


def _added(token):
    return AddedToken(token, lstrip=False, rstrip=False) if isinstance(token, str) else token


class BaichuanTokenizer(PreTrainedTokenizer):
    """A sentencepiece tokenizer; bos/eos added as ``add_bos_token``/``add_eos_token`` say."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ("input_ids", "attention_mask")

    def __init__(
        self,
        vocab_file,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token=None,
        sp_model_kwargs=None,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        **kwargs,
    ):
        self.sp_model_kwargs = {} if sp_model_kwargs is None else sp_model_kwargs
        super().__init__(
            bos_token=_added(bos_token),
            eos_token=_added(eos_token),
            unk_token=_added(unk_token),
            pad_token=_added(pad_token),
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            sp_model_kwargs=self.sp_model_kwargs,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )
        self.vocab_file = vocab_file
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(vocab_file)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = None
        return state

    def __setstate__(self, state):
        self.__dict__ = state
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(self.vocab_file)

    @property
    def vocab_size(self):
        """Pieces in the sentencepiece model."""
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        """Token -> id, added tokens included."""
        vocab = {self.convert_ids_to_tokens(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.IdToPiece(index)

    def convert_tokens_to_string(self, tokens):
        """Pieces back to text; special tokens are written out, not decoded."""
        pieces, text = [], ""
        for token in tokens:
            if token in self.all_special_tokens:
                text += self.sp_model.decode(pieces) + token
                pieces = []
            else:
                pieces.append(token)
        return text + self.sp_model.decode(pieces)

    def save_vocabulary(self, save_directory, filename_prefix=None):
        """Copy (or write) ``tokenizer.model`` into ``save_directory``."""
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        target = os.path.join(save_directory, name)
        if os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(target):
                copyfile(self.vocab_file, target)
        else:
            with open(target, "wb") as out:
                out.write(self.sp_model.serialized_model_proto())
        return (target,)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        """bos + ids + eos per sequence, as the two flags say."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        output = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            output = output + bos + token_ids_1 + eos
        return output
