"""minibert: a small, readable BERT / DistilBERT for the 'Healing Powers of BERT' study."""
from .tokenizer import BertTokenizer, load_tokenizer
