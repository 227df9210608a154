"""Task adapters are found through the `zoo.tasks` entry points (zoo/adapters.py)."""

from importlib.metadata import EntryPoint

import pytest

from zoo import adapters
from zoo.errors import ZooError


def test_the_installed_entry_points_bring_every_family_in_listing_order():
    from tasks.glue import GlueAdapter
    from tasks.squad import SquadAdapter

    assert [a.family for a in adapters.adapters()] == ["squad", "glue", "clue", "ner"]
    assert adapters.get_adapter("squad") is SquadAdapter and adapters.get_adapter("sst2") is GlueAdapter
    assert adapters.family_tasks("ner") == ("conll2003", "msra_ner")


def test_unknown_tasks_and_families_list_what_is_available():
    with pytest.raises(ZooError, match=r"unknown task 'sst3'; available: squad, .*sst2.*tnews"):
        adapters.get_adapter("sst3")
    with pytest.raises(ZooError, match=r"unknown task family 'superglue'; available: squad, glue, clue, ner"):
        adapters.family_tasks("superglue")


def ner_only() -> list:
    from tasks.ner import NerAdapter

    return [NerAdapter]


def test_plugins_load_in_entry_point_name_order():
    from tasks.ner import NerAdapter

    found = adapters.load_adapters([EntryPoint("b", "tasks:adapters", adapters.GROUP), EntryPoint("a", "tests.test_adapters:ner_only", adapters.GROUP)])
    assert [a.family for a in found] == ["ner", "squad", "glue", "clue", "ner"] and found[0] is NerAdapter


def test_an_entry_point_that_does_not_load_is_one_error_naming_it():
    with pytest.raises(ZooError, match=r"'broken = tasks:no_such_function' \(entry-point group 'zoo.tasks'\) do not load .*make setup"):
        adapters.load_adapters([EntryPoint("broken", "tasks:no_such_function", adapters.GROUP)])


def test_without_registered_adapters_the_error_names_the_task_and_the_install(monkeypatch):
    monkeypatch.setattr(adapters, "adapters", lambda: ())
    with pytest.raises(ZooError, match=r"task 'squad': no task adapters are registered .*pip install -e \."):
        adapters.get_adapter("squad")
    with pytest.raises(ZooError, match=r"task family 'glue': no task adapters are registered"):
        adapters.family_tasks("glue")
