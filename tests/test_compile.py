"""torch.compile (the trainer's --compile) works on a CPU and computes what eager mode computes."""
import pytest
import torch

from minibert import Bert, BertConfig, SequenceClassifier


@pytest.mark.slow  # inductor compiles C++: tens of seconds
def test_compiled_classifier_matches_eager_on_a_padded_batch():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    clf = SequenceClassifier(Bert(cfg), num_labels=3, pooling="mean").eval()
    input_ids = torch.randint(5, 100, (4, 12))
    attention_mask = (torch.arange(12)[None] < torch.tensor([12, 9, 5, 2])[:, None]).long()
    with torch.no_grad():
        eager = clf(input_ids * attention_mask, attention_mask)
        compiled = torch.compile(clf)(input_ids * attention_mask, attention_mask)
    assert (eager - compiled).abs().max() <= 1e-5
