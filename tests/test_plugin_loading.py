"""Plugin discovery: guarded entry points, allow/block lists, strict mode, misspelt hooks, claims."""

from __future__ import annotations

import warnings

import pytest

from fake_plugins import install_fake_plugin, masker_plugin_source
from masters.errors import DuplicateComponentError, PluginLoadError, SpecError
from masters.plugins import PluginWarning, get_components


@pytest.fixture
def site(tmp_path, fresh_components):
    fresh_components.syspath_prepend(str(tmp_path))
    return tmp_path


def _load(monkeypatch, allow: str | None = None, **env: str):
    from masters.plugins import reset_components

    if allow is not None:
        monkeypatch.setenv("MASTERS_PLUGINS", allow)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_components()
    return get_components()


def test_builtins_register_through_the_hooks():
    comps = get_components()
    assert all(info.builtin for info in comps.plugins.values())
    assert "magnitude" in comps.registry("masker")
    assert comps.registry("masker").origin("magnitude").distribution == "masters-distill"


def test_autoload_disabled_skips_installed_plugins_unless_allow_listed(site, fresh_components):
    install_fake_plugin(site, dist="masters-extra", module="extra_plugin", source=masker_plugin_source("extra"))
    comps = _load(fresh_components)
    assert "extra" not in comps.registry("masker")
    comps = _load(fresh_components, allow="masters-extra")  # by distribution name
    assert "extra" in comps.registry("masker")
    origin = comps.registry("masker").origin("extra")
    assert (origin.distribution, origin.version, origin.module) == ("masters-extra", "1.0", "extra_plugin")


def test_autoload_on_finds_entry_points_and_block_list_wins(site, fresh_components):
    install_fake_plugin(site, dist="masters-extra", module="extra_plugin", source=masker_plugin_source("extra"))
    fresh_components.delenv("MASTERS_DISABLE_PLUGIN_AUTOLOAD")
    fresh_components.setenv("MASTERS_PLUGINS", "extra_plugin")  # keep other machine plugins out
    comps = _load(fresh_components)
    assert "extra" in comps.registry("masker")
    comps = _load(fresh_components, MASTERS_BLOCK_PLUGINS="extra_plugin")
    assert "extra" not in comps.registry("masker")


def test_broken_plugin_warns_once_and_everything_else_works(site, fresh_components):
    install_fake_plugin(site, dist="masters-broken", version="0.3", module="broken_plugin",
                        source="import not_a_real_module_xyz\n")
    with pytest.warns(PluginWarning, match=r"broken_plugin.*masters-broken 0\.3.*ModuleNotFoundError"):
        comps = _load(fresh_components, allow="broken_plugin")
    assert "magnitude" in comps.registry("masker")
    assert comps.failures[0].distribution == "masters-broken"


def test_broken_plugin_is_an_error_in_strict_mode(site, fresh_components):
    install_fake_plugin(site, dist="masters-broken", module="broken_plugin", source="raise RuntimeError('boom')\n")
    with pytest.raises(PluginLoadError, match=r"masters-broken 1\.0.*RuntimeError: boom"):
        _load(fresh_components, allow="broken_plugin", MASTERS_STRICT_PLUGINS="1")


def test_config_naming_a_component_of_a_broken_plugin_names_the_plugin(site, fresh_components):
    install_fake_plugin(site, dist="masters-broken", module="broken_plugin", source="import not_a_real_module_xyz\n")
    with pytest.warns(PluginWarning):
        _load(fresh_components, allow="broken_plugin")
    from masters.config import validate_run_spec

    with pytest.raises(SpecError) as info:
        validate_run_spec({"teacher": "t", "student": "s", "masker": "broken-masker"})
    text = info.value.render()
    assert "unknown masker 'broken-masker'" in text
    assert "masters-broken 1.0" in text and "not_a_real_module_xyz" in text


def test_misspelt_hook_is_reported_with_the_known_hooks(site, fresh_components):
    install_fake_plugin(site, dist="masters-typo", module="typo_plugin", source='''
        from masters import hookimpl
        @hookimpl
        def masters_register_maskrs(register):
            pass
    ''')
    with pytest.warns(PluginWarning, match=r"masters_register_maskrs.*misspelt.*masters_register_maskers"):
        comps = _load(fresh_components, allow="typo_plugin")
    assert "typo_plugin" not in comps.plugins


def test_duplicate_name_names_both_origins(site, fresh_components):
    install_fake_plugin(site, dist="masters-dup", version="2.1", module="dup_plugin",
                        source=masker_plugin_source("magnitude"))
    with pytest.raises(DuplicateComponentError, match=r"masters-distill .*masters-dup 2\.1"):
        _load(fresh_components, allow="dup_plugin")


def test_plugin_raising_in_its_register_hook_is_skipped(site, fresh_components):
    install_fake_plugin(site, dist="masters-raises", module="raises_plugin", source='''
        from masters import hookimpl
        @hookimpl
        def masters_register_rewards(register):
            raise ValueError("cannot register")
    ''')
    with pytest.warns(PluginWarning, match="masters_register_rewards raised ValueError"):
        comps = _load(fresh_components, allow="raises_plugin")
    assert "exact_match" in comps.registry("reward")


def test_two_plugins_claiming_a_checkpoint_warn_and_name_both(site, fresh_components):
    install_fake_plugin(site, dist="masters-claimer", module="claim_plugin", source='''
        from masters import hookimpl
        @hookimpl
        def masters_claim_checkpoint(config):
            return "other-llava" if config.get("model_type") == "llava" else None
    ''')
    comps = _load(fresh_components, allow="claim_plugin")
    with pytest.warns(PluginWarning, match=r"claim_plugin -> other-llava.*masters.adapters.plugin -> llava"):
        winner = comps.claim_checkpoint({"model_type": "llava"})
    assert winner == "other-llava"  # the later-registered plugin is asked first, as in pluggy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert comps.claim_checkpoint({"model_type": "no-such-family"}) is None


def test_register_rejects_wrong_kind_and_non_specs(site, fresh_components):
    install_fake_plugin(site, dist="masters-wrong", module="wrong_plugin", source='''
        from masters import hookimpl
        from masters.rewards.specs import ExactMatchRewardSpec
        @hookimpl
        def masters_register_maskers(register):
            register(ExactMatchRewardSpec)
    ''')
    with pytest.raises(PluginLoadError, match="is a 'reward' spec but was registered as a masker"):
        _load(fresh_components, allow="wrong_plugin")


@pytest.mark.parametrize("variable", ["MASTERS_PLUGINS", "MASTERS_BLOCK_PLUGINS"])
def test_a_switch_naming_no_installed_plugin_warns_and_is_an_error_when_strict(site, fresh_components, variable):
    install_fake_plugin(site, dist="masters-extra", module="extra_plugin", source=masker_plugin_source("extra"))
    with pytest.warns(PluginWarning, match=rf"{variable} names 'extra_plugn', which matches no installed plugin.*"
                                           r"Did you mean: extra_plugin\?"):
        _load(fresh_components, **{variable: "extra_plugn"})
    with pytest.raises(PluginLoadError, match="matches no installed plugin"):
        _load(fresh_components, **{variable: "extra_plugn", "MASTERS_STRICT_PLUGINS": "1"})


@pytest.mark.parametrize("switch", [{"MASTERS_BLOCK_PLUGINS": "extra_plugin", "MASTERS_PLUGINS": "extra_plugin"},
                                    {}])
def test_unknown_name_says_which_filtered_out_plugin_provides_it(site, fresh_components, switch):
    from masters.config import validate_run_spec

    install_fake_plugin(site, dist="masters-extra", module="extra_plugin", source=masker_plugin_source("extra"))
    comps = _load(fresh_components, **switch)  # blocked, or not loaded because autoload is off
    assert "extra" not in comps.registry("masker")
    reason = "blocked by MASTERS_BLOCK_PLUGINS" if switch else "MASTERS_DISABLE_PLUGIN_AUTOLOAD is set"
    with pytest.raises(SpecError) as caught:
        validate_run_spec({"teacher": "t", "student": "s", "masker": "extra"})
    message = caught.value.problems[0][1]
    assert "plugin 'extra_plugin' (masters-extra) provides masker 'extra' but is not loaded" in message
    assert reason in message
    with pytest.raises(Exception, match="provides masker 'extra'"):
        comps.registry("masker").get("extra")
