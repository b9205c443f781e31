"""What `make venv` installs: the torch wheels tools/torch_wheels.py chooses (its machine checks
stood in for), and the Makefile's use of it; `make lab` opens the student copies. (The lower bounds:
tests/tools/test_lower_bounds.py.)"""
import pytest
from repository import REPO, load_script, make_dry_run

wheels = load_script(REPO / "tools" / "torch_wheels.py")
CPU = ["--index-url", wheels.CPU_INDEX]


@pytest.fixture
def machine(monkeypatch):
    """A machine whose GPU and whose reach of the CPU index the test decides;
    records which index was asked."""
    state = {"gpu": False, "answers": True, "asked": []}
    monkeypatch.setattr(wheels, "has_nvidia_gpu", lambda: state["gpu"])

    def answers(url):
        state["asked"].append(url)
        return state["answers"]

    monkeypatch.setattr(wheels, "index_answers", answers)
    return state


def test_linux_without_a_gpu_gets_the_cpu_wheels_when_their_index_answers(machine):
    arguments, reason = wheels.choose({}, "Linux")
    assert arguments == CPU and machine["asked"] == [wheels.CPU_INDEX]
    assert "CPU-only wheels (no NVIDIA GPU here)" in reason and "TORCH_WHEELS=default" in reason


def test_linux_without_a_gpu_and_without_the_cpu_index_keeps_pips_own_index_and_says_so(machine):
    machine["answers"] = False
    arguments, reason = wheels.choose({}, "Linux")
    assert arguments == []
    assert f"no NVIDIA GPU here, but {wheels.CPU_INDEX} does not answer" in reason


def test_linux_with_a_gpu_keeps_the_cuda_build_without_asking_the_cpu_index(machine):
    machine["gpu"] = True
    arguments, reason = wheels.choose({}, "Linux")
    assert arguments == [] and machine["asked"] == []
    assert "the build with CUDA: an NVIDIA GPU is here" in reason


@pytest.mark.parametrize("system", ["Darwin", "Windows"])
def test_other_systems_keep_pips_index(machine, system):
    arguments, reason = wheels.choose({}, system)
    assert arguments == [] and machine["asked"] == [] and system in reason


@pytest.mark.parametrize("environ, expected, in_reason", [
    ({"TORCH_WHEELS": "cpu"}, CPU, "TORCH_WHEELS=cpu"),
    ({"TORCH_WHEELS": "default"}, [], "TORCH_WHEELS=default"),
    ({"TORCH_INDEX_URL": "https://mirror.example/whl/cu121", "TORCH_WHEELS": "cpu"},
     ["--index-url", "https://mirror.example/whl/cu121"],
     "TORCH_INDEX_URL=https://mirror.example/whl/cu121"),
])
def test_the_environment_decides_without_a_probe(machine, environ, expected, in_reason):
    machine["answers"] = False
    arguments, reason = wheels.choose(environ, "Linux")
    assert arguments == expected and in_reason in reason and machine["asked"] == []


def test_empty_settings_as_make_passes_them_leave_the_choice_to_the_machine(machine):
    assert wheels.choose({"TORCH_WHEELS": " ", "TORCH_INDEX_URL": ""}, "Linux")[0] == CPU


def test_a_wrong_choice_is_refused_naming_it(machine):
    with pytest.raises(ValueError,
                       match="TORCH_WHEELS must be one of auto, cpu, default, got 'gpu'"):
        wheels.choose({"TORCH_WHEELS": "gpu"}, "Linux")


def test_the_script_prints_the_arguments_and_says_the_reason_on_stderr(
        machine, monkeypatch, capsys):
    monkeypatch.setattr(wheels.platform, "system", lambda: "Linux")
    monkeypatch.delenv("TORCH_INDEX_URL", raising=False)
    monkeypatch.delenv("TORCH_WHEELS", raising=False)
    assert wheels.main() == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == " ".join(CPU) and "CPU-only wheels" in printed.err
    monkeypatch.setenv("TORCH_WHEELS", "nonsense")
    assert wheels.main() == 2
    assert "TORCH_WHEELS must be one of" in capsys.readouterr().err


def test_an_index_that_cannot_be_reached_does_not_answer():
    assert not wheels.index_answers("http://127.0.0.1:9/whl/cpu", timeout=2)
    assert not wheels.index_answers("not a url")


def test_make_venv_installs_the_wheels_the_script_chose_or_the_given_line(tmp_path):
    venv = tmp_path / "venv"
    lines = make_dry_run("venv", f"VENV={venv}", "TORCH_WHEELS=cpu",
                         "TORCH_INDEX_URL=https://x.example/i")
    assert ('TORCH_WHEELS="cpu" TORCH_INDEX_URL="https://x.example/i" python3 '
            'tools/torch_wheels.py > '
            f"{venv}/.torch-index") in lines
    assert f"{venv}/bin/python -m pip install  torch torchvision $(cat {venv}/.torch-index)" \
        in lines
    lines = make_dry_run("venv", f"VENV={venv}", "PIP_TORCH_ARGS=torch==2.5.1 torchvision==0.20.1")
    assert "torch_wheels.py" not in lines
    assert f"{venv}/bin/python -m pip install  torch==2.5.1 torchvision==0.20.1" in lines


def test_make_lab_opens_the_student_copies_at_the_repositorys_root(tmp_path):
    lines = make_dry_run("lab", f"VENV={tmp_path / 'venv'}")
    assert f'--ServerApp.root_dir="{REPO}" --LabApp.default_url=/lab/tree/student' in lines
    assert "--LabApp.default_url=/lab/tree/notebooks" \
        in make_dry_run("lab", f"VENV={tmp_path / 'v'}", "LAB_FOLDER=notebooks")
