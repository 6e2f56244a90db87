"""minibert: a small, readable BERT / DistilBERT for the 'Healing Powers of BERT' study."""
from .checkpoint import load_classifier, load_pretrained, save_pretrained
from .config import PRESETS, BertConfig

# minibert.corrupt is the function (the documented call); its module is reached by `from minibert.corrupt import ...`
from .corrupt import CorruptionReport, corrupt, parse_spec
from .heads import SequenceClassifier
from .model import Bert, EncoderOutput
from .tokenizer import BertTokenizer, load_tokenizer

__all__ = ["load_classifier", "load_pretrained", "save_pretrained", "PRESETS", "BertConfig", "CorruptionReport",
           "corrupt", "parse_spec", "SequenceClassifier", "Bert", "EncoderOutput", "BertTokenizer", "load_tokenizer"]
