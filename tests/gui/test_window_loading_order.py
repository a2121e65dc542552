"""Loads that overlap: only the last opened inputs are shown; a job's layer rules apply once."""

from __future__ import annotations

from conftest import wait_idle

from mono_quant_core.config import QuantConfig
from mono_quant_gui.demo import demo


def test_only_the_last_opened_script_is_shown(window, qtbot, monkeypatch):
    shown = []
    real = window.modules.set_rows
    monkeypatch.setattr(window.modules, "set_rows", lambda rows: (shown.append(len(rows)), real(rows)))
    cnn, transformer = demo("cnn"), demo("transformer")
    window.open_script(str(cnn.script), str(cnn.checkpoint))
    window.open_script(str(transformer.script), str(transformer.checkpoint))  # before the first load ends
    wait_idle(qtbot, window)
    assert len(shown) == 1  # the CNN's load finished but was not applied
    assert window.session.loaded.source["script"] == transformer.script.name


def test_a_jobs_layer_rules_tick_the_tree_once(window, qtbot, tmp_path):
    from mono_quant_core.jobs import Job

    cnn = demo("cnn")
    window.open_script(str(cnn.script), str(cnn.checkpoint))
    wait_idle(qtbot, window)
    everything = window.modules.model.checked_names()
    first = everything[0]
    job = Job(
        script=str(cnn.script),
        checkpoint=str(cnn.checkpoint),
        output=str(tmp_path / "q.safetensors"),
        config=QuantConfig(layers=[first]),
    )
    window.open_script(str(cnn.script), str(cnn.checkpoint), job=job)
    wait_idle(qtbot, window)
    assert window.modules.model.checked_names() == [first]
    assert window.session.job_chosen == [first]
    window.open_checkpoint(str(cnn.checkpoint))  # a later load: the job's rules are not applied again
    wait_idle(qtbot, window)
    assert window.modules.model.checked_names() == everything


def test_a_script_and_a_folder_dropped_together_are_previewed_once_with_the_new_model(window, qtbot, monkeypatch):
    import mono_quant_gui.run.tasks as tasks

    previews = []
    real = tasks.preview_task
    monkeypatch.setattr(tasks, "preview_task", lambda ctx, **kw: (previews.append(kw["model"]), real(ctx, **kw))[1])
    cnn = demo("cnn")
    window.handle_paths([str(cnn.calibration), str(cnn.script), str(cnn.checkpoint)])
    wait_idle(qtbot, window)
    assert len(previews) == 1 and previews[0] is window.session.model
    assert window.calibration_panel.dry_run.text().startswith("✓ Dry run")
