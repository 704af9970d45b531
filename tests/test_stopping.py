"""When a training stage stops: hand-checked sequences of validation scores and times."""

from taosr.stopping import Stopping


def test_patience_counts_checks_without_a_gain_over_the_best():
    stopping = Stopping(patience=2, min_delta=0.01)
    # 0.30 -> 0.40 is a gain; 0.405 is within min_delta (no gain, 1); 0.42 resets; 0.41, 0.425 (no gain: 1, 2).
    assert [
        stopping.validated(step, score)
        for step, score in [(50, 0.30), (100, 0.40), (150, 0.405), (200, 0.42), (250, 0.41), (300, 0.425)]
    ] == [False, False, False, False, False, True]
    assert stopping.best_step == 200 and stopping.best_score == 0.42
    assert stopping.reason.startswith("patience: 2 validation checks without a gain over step 200's 0.4200")
    assert stopping.finished(300, 600) == stopping.reason
    assert stopping.curve[-1] == (300, 0.425)


def test_no_patience_never_stops_on_validation():
    stopping = Stopping()
    assert not any(stopping.validated(step, 0.5 - step / 1000) for step in range(50, 500, 50))
    assert stopping.finished(450, 450) == "step budget: 450 of 450 steps"
    assert stopping.finished(120, 450) == "data: the shards ran out at step 120 of 450"


def test_a_missing_score_is_not_a_check():
    stopping = Stopping(patience=1)
    assert not stopping.validated(50, None) and stopping.curve == []


def test_the_time_cap():
    stopping = Stopping(max_seconds=600)
    assert not stopping.out_of_time(599.0)
    assert stopping.out_of_time(630.0) and stopping.reason == "time cap: 10.5 of 10.0 minutes"
    assert not Stopping().out_of_time(10**6)


def test_the_rl_loop_stops_on_its_time_cap_with_the_reason():
    import time

    from taosr.config import GrpoConfig
    from taosr.training.rl import PolicyChecks

    checks = PolicyChecks(GrpoConfig(steps=10, max_minutes=0.0005), validation=None, rank=0)  # 30 ms
    assert not checks.due(5) and not checks.out_of_time(device=None, world=1)
    time.sleep(0.05)
    assert checks.out_of_time(device=None, world=1)
    assert checks.finish(3, module=None, stopped=True) == {"stop_reason": checks.stopping.reason, "stopped_early": 1}
    assert checks.stopping.reason.startswith("time cap:")
    assert not PolicyChecks(GrpoConfig(steps=10), validation=None, rank=0).out_of_time(device=None, world=1)
