"""One seed tree: every random stream of a run is derived from the run seed, by name, here.

``seed_for(seed, stream, index)`` is the seed of stream ``stream`` at position ``index``
(an epoch, a trial, an episode), so an epoch or a trial replays identically on resume and
streams of one run never share numbers by accident. The table is the one place that says
which streams exist; adding one is adding a name with a salt no stream of the same kind of
run uses. (HAQ's two streams keep the salts they always had, so quantize runs reproduce;
a quantize run has no search or trial streams.)
"""

from __future__ import annotations

#: stream name -> salt (fixed: changing one changes every seeded result that uses it)
STREAMS: dict[str, int] = {
    "search.epoch": 0,             # global RNG at the start of a one-shot search epoch (samples, dropout)
    "search.train_batches": 1,     # order and augmentation of the weight half
    "search.valid_batches": 2,     # order and augmentation of the architecture half
    "search.bn_recalibration": 3,  # batches that re-estimate BatchNorm before the supernet's valid accuracy
    "train.epoch": 11,             # global RNG at the start of a final-training epoch (drop-path)
    "train.batches": 12,           # order and augmentation of the final training
    "train.bn_recalibration": 13,  # batches that re-estimate BatchNorm before the final test
    "evaluate.batches": 21,        # order of a train-evaluator trial's batches
    "evaluate.bn_recalibration": 22,
    "trial": 31,                   # a sample-based trial's own seed
    "optuna.ask": 41,              # the Optuna sampler of an ask (tpe, nsga2)
    "bohb.draw": 42,               # BOHB's model draw of a new architecture
    "haq.episode": 21,             # HAQ (a quantize run): the evaluation of an episode's policy
    "haq.finetune": 31,            # HAQ (a quantize run): the final fine-tune of the chosen policy
}


def seed_for(seed: int, stream: str, index: int = 0) -> int:
    """The seed of ``stream`` at ``index`` (an epoch, a trial, an episode) of a run seeded ``seed``."""
    try:
        salt = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown random stream {stream!r}; add it to nasforge.seeds.STREAMS") from None
    return (seed * 1_000_003 + index * 7919 + salt) % (2**63 - 1)
