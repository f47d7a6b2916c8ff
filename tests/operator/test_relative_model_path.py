"""A relative ``model.path`` in a cluster: kubectl stores it, the operator refuses it as
InvalidSpec (there is no manifest folder to read it from) and starts no pod."""

from __future__ import annotations

from tests.operator.test_controller import Events, condition, create_md, pods, read_md, reconcile


def test_a_relative_model_path_is_invalid_spec_and_starts_nothing(api) -> None:
    model = {"path": "./tiny-model", "names": ["tiny"], "trustRemoteCode": True}
    create_md(api, "relative", 1, model=model)
    events = Events()
    status = reconcile(api, "relative", events)
    assert pods(api, "relative") == {}
    assert status["phase"] == "Failed"
    invalid = condition(read_md(api, "relative")["status"], "InvalidSpec")
    assert invalid["status"] == "True"
    assert invalid["message"].startswith("spec.model.path: ./tiny-model is relative")
    assert "absolute path" in invalid["message"] and "hub id" in invalid["message"]
    assert events.reasons() == ["InvalidSpec"]
