"""The operator's kit in deploy/ (issue 15, item 9). Docker and systemd cannot run here, so what
can be checked is: compose.yaml has the services the guide describes, every variable the kit sets
for the bot is a real setting (and its value one the settings accept), every file the Dockerfile
copies exists, every ``python -m bot`` command the kit runs exists, and the proxies route the
webhook paths."""

from __future__ import annotations

import re
import shutil
import shlex
from pathlib import Path

import pytest
import uvicorn
import yaml

from bot.cli import build_parser
from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# Variables the kit sets that another program reads, not our settings: checked below to be read there.
NOT_SETTINGS = {"PYTHONUNBUFFERED", "FORWARDED_ALLOW_IPS", "MPLCONFIGDIR"}
# `serve` is being built in parallel (issue 15, item 1); the lead empties this set when merging it.
PENDING_COMMANDS = {"serve"}
PUBLIC_PATHS = ("/telegram/webhook", "/wechat", "/wecom", "/r/", "/console")


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def _interpolated(value: str) -> str:
    """Compose's ${NAME:?message} and ${NAME} filled with a stand-in, as `docker compose config` would."""
    return re.sub(r"\$\{(\w+)(:?[?-][^}]*)?\}", lambda m: f"x{m.group(1).lower()}", str(value))


def bot_services(spec: dict) -> dict[str, dict]:
    return {name: service for name, service in spec["services"].items() if "build" in service}


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def systemd_env() -> dict[str, dict[str, str]]:
    out = {}
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        env = {}
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith("Environment="):
                name, _, value = line[len("Environment="):].partition("=")
                env[name] = value.replace("%i", "8081")
        out[unit.name] = env
    return out


def test_compose_has_the_database_two_web_processes_a_worker_and_a_proxy():
    spec = compose()
    services = spec["services"]
    assert services["db"]["image"].startswith("postgres:")
    bots = bot_services(spec)
    assert sorted(bots) == ["migrate", "web1", "web2", "worker"]
    assert [bots[name]["command"] for name in ("migrate", "web1", "web2", "worker")] == \
        [["migrate"], ["serve"], ["serve"], ["worker"]]
    for name in ("web1", "web2", "worker"):  # nothing starts before the schema is migrated
        assert bots[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    proxy = services["proxy"]
    assert "443:443" in proxy["ports"] and "caddy" in proxy["image"]
    # The web processes trust forwarded addresses from the proxy's fixed address only.
    proxy_ip = proxy["networks"]["internal"]["ipv4_address"]
    for service in bots.values():
        assert service["environment"]["FORWARDED_ALLOW_IPS"] == proxy_ip
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://")


def test_every_variable_the_kit_sets_is_a_setting_with_a_valid_value():
    settings = {name.upper() for name in Settings.model_fields}
    sets = {"Dockerfile": dockerfile_env(), **systemd_env()}
    for name, service in bot_services(compose()).items():
        sets[f"compose.yaml {name}"] = {k: _interpolated(v) for k, v in service["environment"].items()}
    for where, env in sets.items():
        unknown = set(env) - settings - NOT_SETTINGS
        assert not unknown, f"{where} sets {sorted(unknown)}, which are not settings of bot/config.py"
        values = {k.lower(): v for k, v in env.items() if k in settings}
        Settings(_env_file=None, **values)  # a wrong value fails here, as it would at start


def test_the_variables_that_are_not_settings_are_read_by_their_program(monkeypatch, tmp_path):
    import subprocess
    import sys

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "172.28.0.10")
    assert uvicorn.Config(app=None).forwarded_allow_ips == "172.28.0.10"  # uvicorn reads it itself
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path))  # matplotlib keeps its font cache there
    shown = subprocess.run([sys.executable, "-c", "import matplotlib; print(matplotlib.get_cachedir())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown == str(tmp_path)


def test_the_dockerfile_copies_files_that_exist_and_runs_as_a_user_with_the_cjk_font():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    copies = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert "fonts-wqy-microhei" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert '"python", "-m", "bot"' in text and 'CMD ["serve"]' in text


def _bot_commands() -> set[str]:
    """Every `python -m bot X` the kit runs: compose commands, systemd ExecStart lines, the guide."""
    used = {service["command"][0] for service in bot_services(compose()).values()}
    used.add(re.search(r'CMD \["(\w[\w-]*)"\]', (DEPLOY / "Dockerfile").read_text(encoding="utf-8")).group(1))
    for path in [*(DEPLOY / "systemd").glob("*.service"), DEPLOY / "部署指南.md"]:
        used |= set(re.findall(r"python -m bot ([a-z][a-z-]+)", path.read_text(encoding="utf-8")))
    return used


def test_every_command_the_kit_runs_exists():
    parser = build_parser()
    [sub] = [a for a in parser._subparsers._group_actions]
    known = set(sub.choices)
    used = _bot_commands()
    assert {"migrate", "worker", "backup", "restore", "prune", "serve"} <= used
    assert used - known <= PENDING_COMMANDS, f"unknown commands: {sorted(used - known - PENDING_COMMANDS)}"


@pytest.mark.parametrize("config", ["nginx.conf", "Caddyfile"])
def test_the_proxies_route_the_public_paths_and_keep_the_internal_ones_inside(config):
    text = (DEPLOY / config).read_text(encoding="utf-8")
    for path in PUBLIC_PATHS:
        assert path.rstrip("/") in text, f"{config} does not route {path}"
    if config == "nginx.conf":
        assert "proxy_set_header X-Forwarded-For   $remote_addr;" in text  # overwritten, never appended
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
        assert re.search(r"location ~ \^/\(readyz\|metrics\)\$ \{[^}]*deny all;", text)
    else:
        assert "respond 404" in text and "/readyz" not in text.split("@public", 2)[1].split("\n")[0]


def test_the_guide_and_the_checklist_cover_the_operators_tasks():
    guide = (DEPLOY / "部署指南.md").read_text(encoding="utf-8")
    for heading in ("配置", "PostgreSQL", "HTTPS", "Webhook", "备份", "升级", "监控"):
        assert heading in guide
    checklist = (DEPLOY / "生产检查清单.md").read_text(encoding="utf-8")
    assert checklist.count("- [ ]") >= 20 and "EVALUATION_SECRET" in checklist


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None,
                    reason="nginx or openssl not installed (Debian: apt-get install nginx openssl)")
def test_the_nginx_example_passes_nginx_t(tmp_path):
    """nginx itself checks the example, with a throwaway certificate in place of the real one."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=pingjia.example.gov.cn", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    site = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    site = site.replace("/etc/nginx/ssl/pingjia.example.gov.cn.pem", str(cert))
    site = site.replace("/etc/nginx/ssl/pingjia.example.gov.cn.key", str(key))
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n include {tmp_path}/site.conf;\n}}\n", encoding="utf-8")
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """systemd checks the units; the only complaint allowed is the program not installed here."""
    import subprocess

    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        copy = tmp_path / unit.name.replace("@.", "@8081.")
        copy.write_text(unit.read_text(encoding="utf-8"), encoding="utf-8")
        units.append(str(copy))
    (tmp_path / "zuofeng-web@.service").write_text((DEPLOY / "systemd" / "zuofeng-web@.service")
                                                   .read_text(encoding="utf-8"), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", "--man=false", *units], capture_output=True, text=True)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.strip() and "/opt/zuofeng/.venv/bin/python is not executable" not in line]
    assert complaints == []
