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


@pytest.mark.slow
def test_bucketed_lengths_bound_the_graphs_a_run_compiles():
    """The trainer pads a compiled run's batches to a multiple of 32 (device.COMPILE_BUCKET): an epoch over
    lengths 3-64 then compiles one graph per (bucket, batch size), not one per length, and still computes
    what eager mode computes."""
    import numpy as np
    import torch.nn.functional as F
    from torch._dynamo.testing import CompileCounter

    from minibert.data.encoding import Encoded, batches
    from minibert.training.device import COMPILE_BUCKET

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 65, size=100)
    enc = Encoded(ids=[[2] + rng.integers(5, 100, n - 1).tolist() for n in lengths], type_ids=[[0] * n for n in lengths],
                  labels=rng.integers(0, 3, 100).tolist(), lengths=lengths)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    clf = SequenceClassifier(Bert(cfg), num_labels=3).train()

    def graphs(multiple: int) -> int:
        torch._dynamo.reset()
        counter = CompileCounter()
        model = torch.compile(clf, backend=counter, dynamic=False)
        for batch in batches(enc, 16, seed=0, multiple_of=multiple, max_length=64):
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["lengths"])
            F.cross_entropy(logits, batch["labels"]).backward()
        return counter.frame_count

    shapes = {(len(b["lengths"]), b["input_ids"].shape[1]) for b in batches(enc, 16, seed=0, multiple_of=COMPILE_BUCKET,
                                                                               max_length=64)}
    assert graphs(COMPILE_BUCKET) == len(shapes) <= 4  # lengths 32 or 64, batches of 16 and the last one of 4
    assert graphs(1) > 2 * len(shapes)  # without buckets: a graph per new length

    batch = next(batches(enc, 16, seed=0, multiple_of=COMPILE_BUCKET, max_length=64))
    clf.eval()
    torch._dynamo.reset()
    with torch.no_grad():
        eager = clf(**{k: v for k, v in batch.items() if k != "labels"})
        compiled = torch.compile(clf, dynamic=False)(**{k: v for k, v in batch.items() if k != "labels"})
    assert (eager - compiled).abs().max() <= 1e-5
