"""Prefect settings for CLI runs: ephemeral mode unless PREFECT_API_URL, analytics off, user values kept."""

from neptune_exporter.prefect_env import configure_prefect, prefect_settings, uses_ephemeral_server


def test_without_api_url_ephemeral_mode_is_configured_for_a_fresh_machine():
    environ: dict[str, str] = {}
    added = configure_prefect(environ)
    assert environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] == "true"
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert environ["PREFECT_LOGGING_LEVEL"] == "WARNING"
    assert added == environ
    assert uses_ephemeral_server(environ)


def test_with_api_url_no_ephemeral_settings_and_url_untouched():
    environ = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    configure_prefect(environ)
    assert environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert "PREFECT_SERVER_EPHEMERAL_ENABLED" not in environ
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert not uses_ephemeral_server(environ)


def test_values_the_user_set_win():
    environ = {"PREFECT_LOGGING_LEVEL": "DEBUG", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    assert "PREFECT_LOGGING_LEVEL" not in prefect_settings(environ)
    configure_prefect(environ)
    assert environ["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "300"
