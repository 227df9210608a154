"""Profiles are validated before anything runs; errors name the file, the key and the fix."""

import pytest

from tasks.squad import SquadConfig
from zoo.errors import ZooError
from zoo.profiles import load_profile, parse_task_config


def test_shipped_profiles_validate():
    for name in ("cpu", "full"):
        profile = load_profile("squad", name)
        parse_task_config(SquadConfig, profile, "recipes/squad.yaml")
    assert load_profile("squad", "full").train.max_examples is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ("profiles: {p: {train: {epochs: 1, batch_size: 0, learning_rate: 1}, eval: {}}}", "key 'train.batch_size'"),
        ("profiles: {p: {train: {epochs: 1, batch_size: 8, learning_rate: 1, lr: 2}, eval: {}}}", "key 'train.lr': unknown key"),
        ("profiles: {p: {eval: {}}}", "key 'train': Field required"),
        ("nothing: here", "top-level key 'profiles'"),
        ("profiles: [", "not valid YAML"),
    ],
)
def test_bad_profile_files(tmp_path, text, needle):
    path = tmp_path / "squad.yaml"
    path.write_text(text)
    with pytest.raises(ZooError) as err:
        load_profile("squad", "p", path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_bad_task_section_names_the_key(tmp_path):
    path = tmp_path / "squad.yaml"
    path.write_text("profiles: {p: {train: {epochs: 1, batch_size: 8, learning_rate: 1}, eval: {}, task: {doc_stride: 400}}}")
    with pytest.raises(ZooError, match="task.*doc_stride must be <"):
        parse_task_config(SquadConfig, load_profile("squad", "p", path), str(path))
