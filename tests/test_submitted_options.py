"""A run started by others can only narrow what its deployment allows (tasks/inputs/trust.widened):
every number in the options model is a cap unless the rule names it otherwise, so an option added
later is bounded without anyone remembering to list it. Pure checks; the same rule on a real
worker is in tests/test_untrusted_runs.py.
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError
from annotated_types import Ge, Gt, Le

from audiobatch.flows.guard import check_job_variables
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.inputs.trust import (AT_LEAST, CHOSEN, NO_LIMIT_WHEN_NONE, SAME, SUBSET, WITHIN_ROOTS,
                                           is_number, widened)
from audiobatch.tasks.options import (InboxOptions, JobOptions, NarrateOptions, TranscribeOptions,
                                      nested, option_fields)

MODELS = (TranscribeOptions, NarrateOptions, InboxOptions)


def with_value(model: type[JobOptions], path: tuple[str, ...], value) -> JobOptions:
    data: dict = {}
    target = data
    for name in path[:-1]:
        target = target.setdefault(name, {})
    target[path[-1]] = value
    return model.model_validate(data)


def two_values(field) -> tuple[float, float]:
    """A lower and a higher value the field accepts."""
    low = 1
    for rule in field.metadata:
        if isinstance(rule, Ge):
            low = max(low, rule.ge)
        if isinstance(rule, Gt):
            low = max(low, rule.gt + 1)
    high = low + 1
    for rule in field.metadata:
        if isinstance(rule, Le):
            high = min(high, rule.le)
    assert high > low, field
    return low, high


def test_the_issues_examples_are_refused() -> None:
    deployment = NarrateOptions()
    submitted = NarrateOptions.model_validate({
        "narration": {"verify_attempts": 500}, "throughput": {"timeout_s": 1e7, "max_backoff_s": 86400},
        "scale": {"dask_workers": 256, "shards": 1000}})
    problems = "; ".join(widened(submitted, deployment))
    for said in ("verify_attempts 500 is above the deployment's 3", "timeout_s 1e+07 is above",
                 "max_backoff_s 86400 is above the deployment's 30", "shards 1000 is above the deployment's 1",
                 "dask_workers 256: the deployment leaves it at its default"):
        assert said in problems, problems


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_number_in_the_options_model_is_bounded_by_the_deployments(model) -> None:
    numbers = [(path, field) for path, field in option_fields(model) if is_number(field)]
    assert len(numbers) >= 15  # the walk sees the model, not a list
    for path, field in numbers:
        name = path[-1]
        if name in CHOSEN:
            continue
        low, high = two_values(field)
        deployment = with_value(model, path, high if name in AT_LEAST else low)
        submitted = with_value(model, path, low if name in AT_LEAST else high)
        assert any(p.startswith(f"{name} ") for p in widened(submitted, deployment)), path
        assert widened(deployment, deployment) == []
        narrower = with_value(model, path, high if name in AT_LEAST else low)
        assert widened(narrower, deployment) == [], path
        if name not in AT_LEAST and name not in NO_LIMIT_WHEN_NONE and field.default is None:
            # the deployment leaves it at the default: a run may not set it
            assert widened(submitted, model()) != [], path


def test_the_rules_name_only_options_that_exist() -> None:
    names = {path[-1] for model in MODELS for path, _ in option_fields(model)}
    flow_numbers = {"limit", "stale_claim_h"}  # the podcast's and the inbox's own parameters
    for rule in (AT_LEAST, CHOSEN, NO_LIMIT_WHEN_NONE, SUBSET, WITHIN_ROOTS, SAME):
        assert rule <= names | flow_numbers, rule - names


def test_a_shared_name_is_checked_in_each_group() -> None:
    # InboxOptions has max_audio_tokens twice (transcription, narration): a flat view would
    # hide the first behind the second
    deployment = InboxOptions.model_validate({"transcription": {"max_audio_tokens": 2000},
                                              "narration": {"max_audio_tokens": 2000}})
    submitted = InboxOptions.model_validate({"transcription": {"max_audio_tokens": 99999},
                                             "narration": {"max_audio_tokens": 2000}})
    assert widened(submitted, deployment) == ["max_audio_tokens 99999 is above the deployment's 2000"]


def test_feeds_roots_and_schemes_stay_the_deployments(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "team").mkdir(parents=True)
    deployment = NarrateOptions.model_validate({"throughput": {"allow_schemes": ["s3"]}})
    submitted = NarrateOptions.model_validate({
        "narration": {"feed_url": "https://elsewhere.example/show"},
        "throughput": {"allow_schemes": ["s3", "ftp"],
                       "data_roots": [str(data / "team"), str(data / "team" / ".." / ".." / "x")]}})
    problems = widened(submitted, deployment, operator_roots=[str(data)])
    assert "feed_url 'https://elsewhere.example/show' is not the deployment's None" in problems
    assert "allow_schemes adds ftp" in problems
    assert [p for p in problems if p.startswith("data_roots")] == [
        f"data_roots {data / 'team' / '..' / '..' / 'x'} is outside the operator's data roots ({data})"]
    with pytest.raises(ValueError, match="not a URL scheme name"):
        NarrateOptions.model_validate({"throughput": {"allow_schemes": ["simplecache::http"]}})
    with pytest.raises(ValueError, match="a data root is a local folder"):
        NarrateOptions.model_validate({"throughput": {"data_roots": ["s3://bucket"]}})


def test_job_variables_of_a_run_may_not_change_the_workers_environment() -> None:
    deployment = {"env": {"TZ": "UTC"}}
    check_job_variables({}, deployment)
    check_job_variables({"env": {"TZ": "UTC", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "5"}}, deployment)
    for run in ({"env": {"AUDIOBATCH_DATA_ROOTS": "/"}}, {"env": {"OPENAI_BASE_URL": "http://evil"}},
                {"command": "sh -c 'cat /etc/shadow'"}, {"working_dir": "/"}):
        with pytest.raises(ConfigError, match="sets job variables of its own"):
            check_job_variables(run, deployment)


def test_nested_keeps_data_roots_with_the_other_throughput_options() -> None:
    assert nested(TranscribeOptions, {"data_roots": ["/data"], "concurrency": 2}) == {
        "throughput": {"data_roots": ["/data"], "concurrency": 2}}


def test_a_submitted_run_chooses_its_captions_within_the_models_bounds() -> None:
    """Caption limits shape the output, like the speed: a run may set them (its captions are
    its own), only within the options model's ranges, which bound the cue builder's work."""
    deployment = TranscribeOptions()
    submitted = TranscribeOptions.model_validate({"caption_style": {
        "caption_preset": "children", "caption_line_chars": 32, "caption_lines": 3,
        "caption_cps": 15, "caption_min_s": 1.5, "caption_max_s": 6}})
    assert widened(submitted, deployment) == []
    for out_of_range in ({"caption_lines": 50}, {"caption_line_chars": 100000},
                         {"caption_min_s": 6, "caption_max_s": 5}, {"caption_cps": 0}):
        with pytest.raises(ValidationError):
            TranscribeOptions.model_validate({"caption_style": out_of_range})
