# Tests: Check unit suites per module, and integration suites that run the real visierd and
# visier-sim on loopback ports (see tests/harness.h).
noinst_LIBRARIES += libharness.a
libharness_a_SOURCES = tests/harness.c tests/harness.h tests/pg-harness.c tests/pg-harness.h
libharness_a_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS) $(LIBPQ_CFLAGS) $(SQLITE_CFLAGS) -I$(top_srcdir)/src/visierd

TEST_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) $(VISIERD_DEP_CFLAGS) -I$(top_srcdir)/src/visierd -I$(top_srcdir)/tests
TEST_LDADD = libharness.a libvisierd-core.a $(CHECK_LIBS) $(VISIERD_DEP_LIBS)

unit_tests = tests/check-coalesce tests/check-config tests/check-token tests/check-ratelimit tests/check-jobs tests/check-store tests/check-openapi tests/check-exports tests/check-validate tests/check-cache tests/check-session tests/check-parse tests/check-history
# The fleet's publish lease against a real PostgreSQL (tests/pg-harness.h; SKIP where it cannot run).
unit_tests += tests/check-lease
# The fleet's shared rate budget against a real PostgreSQL (SKIP where it cannot run).
unit_tests += tests/check-budget
# The job store's database edge (db.h) and its PostgreSQL schema against a real PostgreSQL
# (SKIP where it cannot run).
unit_tests += tests/check-db
# The node's membership in the fleet (fleet.c): lane, heartbeats, budget adapter, outages.
unit_tests += tests/check-fleet
integration_tests = tests/test-proxy tests/test-rollover tests/test-cli tests/test-writes tests/test-systemd tests/test-security tests/test-exports tests/test-recovery tests/test-readonly tests/test-sim tests/test-sim-visierd
# End-to-end proofs of the publisher's promises under crashes, fault storms and a full disk
# (tests/README); they share the client workload in tests/workload.c.
integration_tests += tests/test-crashloop tests/test-storm tests/test-fulldisk
# The one event loop: holds, caps, probes, graceful drain.
integration_tests += tests/test-loop
# The upstream client on an sd-event loop, in the test's own thread, against visier-sim.
integration_tests += tests/test-upstream-async
# Visier's clients against visierd: local sign-in.
integration_tests += tests/test-signin tests/test-answers tests/test-rounds
# Fleet mode: three nodes on one PostgreSQL, one visier-sim (SKIP where PostgreSQL cannot run).
integration_tests += tests/test-fleet
# /metrics through Prometheus's promtool (SKIP without it).
integration_tests += tests/test-promtool
# The /ui page in headless Chromium (SKIP where it cannot run); its artifacts stay in tests/.
integration_tests += tests/test-ui
CLEANFILES += tests/ui-screenshot.png tests/ui-dom.html tests/ui-dom-failed.html tests/ui-dom-header.html
EXTRA_DIST += tests/README
# tests/test-sim-visierd: visierd against the strict simulator (the TEST_SIM_VISIERD part of
# tests/test-sim.c): reconciliation in the write's own scope, merged assignments per permission.

check_PROGRAMS += $(unit_tests) $(integration_tests)

# The store's unit suite and the write path's integration suites run a second time with the job
# store on PostgreSQL:
# tests/pg/NAME.pg (an empty file naming the run, logged as tests/pg/NAME.log) runs
# tests/NAME through tests/on-postgresql.sh.
pg_integration_tests = tests/pg/check-store.pg tests/pg/test-writes.pg tests/pg/test-answers.pg tests/pg/test-rounds.pg \
	tests/pg/test-recovery.pg tests/pg/test-loop.pg tests/pg/test-sim-visierd.pg tests/pg/test-crashloop.pg \
	tests/pg/test-storm.pg
TEST_EXTENSIONS = .pg
PG_LOG_COMPILER = $(SHELL) $(srcdir)/tests/on-postgresql.sh
TESTS += $(pg_integration_tests)
EXTRA_DIST += $(pg_integration_tests)
dist_noinst_SCRIPTS += tests/on-postgresql.sh
tests/pg/check-store.log: tests/check-store$(EXEEXT)
tests/pg/test-writes.log: tests/test-writes$(EXEEXT)
tests/pg/test-answers.log: tests/test-answers$(EXEEXT)
tests/pg/test-rounds.log: tests/test-rounds$(EXEEXT)
tests/pg/test-recovery.log: tests/test-recovery$(EXEEXT)
tests/pg/test-loop.log: tests/test-loop$(EXEEXT)
tests/pg/test-sim-visierd.log: tests/test-sim-visierd$(EXEEXT)
tests/pg/test-crashloop.log: tests/test-crashloop$(EXEEXT)
tests/pg/test-storm.log: tests/test-storm$(EXEEXT)

TESTS += $(unit_tests) $(integration_tests) tests/check-banned.sh tests/check-man.sh tests/check-units.sh \
	tests/check-validate-schema.sh tests/check-policy.sh tests/check-config-sample.sh tests/check-man-claims.sh \
	tests/check-quickstart.sh tests/check-completion.sh
dist_noinst_SCRIPTS += tests/check-banned.sh tests/check-man.sh tests/check-units.sh \
	tests/check-validate-schema.sh tools/gen-validate-schema.py tests/check-policy.sh tools/gen-policy.py \
	tests/check-config-sample.sh tools/gen-config-sample.py tests/check-man-claims.sh tests/check-quickstart.sh \
	tests/check-completion.sh
# The completion is checked against visierctl's --help.
tests/check-completion.log: visierctl$(EXEEXT)

tests_check_config_SOURCES = tests/check-config.c
tests_check_config_CFLAGS = $(TEST_CFLAGS)
tests_check_config_LDADD = $(TEST_LDADD)
tests_check_token_SOURCES = tests/check-token.c
tests_check_token_CFLAGS = $(TEST_CFLAGS)
tests_check_token_LDADD = $(TEST_LDADD)
tests_check_ratelimit_SOURCES = tests/check-ratelimit.c
tests_check_ratelimit_CFLAGS = $(TEST_CFLAGS)
tests_check_ratelimit_LDADD = $(TEST_LDADD)
tests_check_coalesce_SOURCES = tests/check-coalesce.c
tests_check_coalesce_CFLAGS = $(TEST_CFLAGS)
tests_check_coalesce_LDADD = $(TEST_LDADD)
tests_check_jobs_SOURCES = tests/check-jobs.c
tests_check_jobs_CFLAGS = $(TEST_CFLAGS)
tests_check_jobs_LDADD = $(TEST_LDADD)
tests_check_store_SOURCES = tests/check-store.c
tests_check_store_CFLAGS = $(TEST_CFLAGS)
tests_check_store_LDADD = $(TEST_LDADD)
tests_check_openapi_SOURCES = tests/check-openapi.c
tests_check_openapi_CFLAGS = $(TEST_CFLAGS)
tests_check_openapi_LDADD = $(TEST_LDADD)
tests_check_exports_SOURCES = tests/check-exports.c
tests_check_exports_CFLAGS = $(TEST_CFLAGS)
tests_check_exports_LDADD = $(TEST_LDADD)
tests_check_validate_SOURCES = tests/check-validate.c
tests_check_validate_CFLAGS = $(TEST_CFLAGS)
tests_check_validate_LDADD = $(TEST_LDADD)
tests_check_parse_SOURCES = tests/check-parse.c
tests_check_parse_CFLAGS = $(TEST_CFLAGS)
tests_check_parse_LDADD = $(TEST_LDADD)
tests_check_lease_SOURCES = tests/check-lease.c
tests_check_lease_CFLAGS = $(TEST_CFLAGS)
tests_check_lease_LDADD = $(TEST_LDADD)
tests_check_db_SOURCES = tests/check-db.c
tests_check_db_CFLAGS = $(TEST_CFLAGS)
tests_check_db_LDADD = $(TEST_LDADD)
tests_check_budget_SOURCES = tests/check-budget.c
tests_check_budget_CFLAGS = $(TEST_CFLAGS)
tests_check_budget_LDADD = $(TEST_LDADD)
tests_check_fleet_SOURCES = tests/check-fleet.c
tests_check_fleet_CFLAGS = $(TEST_CFLAGS)
tests_check_fleet_LDADD = $(TEST_LDADD)
tests_check_history_SOURCES = tests/check-history.c
tests_check_history_CFLAGS = $(TEST_CFLAGS)
tests_check_history_LDADD = $(TEST_LDADD)
tests_check_session_SOURCES = tests/check-session.c
tests_check_session_CFLAGS = $(TEST_CFLAGS)
tests_check_session_LDADD = $(TEST_LDADD)
tests_test_fleet_SOURCES = tests/test-fleet.c tests/workload.c tests/workload.h
tests_test_fleet_CFLAGS = $(TEST_CFLAGS)
tests_test_fleet_LDADD = $(TEST_LDADD)
tests_test_promtool_SOURCES = tests/test-promtool.c
tests_test_promtool_CFLAGS = $(TEST_CFLAGS)
tests_test_promtool_LDADD = $(TEST_LDADD)
tests_test_rounds_SOURCES = tests/test-rounds.c
tests_test_rounds_CFLAGS = $(TEST_CFLAGS)
tests_test_rounds_LDADD = $(TEST_LDADD)
tests_test_answers_SOURCES = tests/test-answers.c
tests_test_answers_CFLAGS = $(TEST_CFLAGS)
tests_test_answers_LDADD = $(TEST_LDADD)
tests_test_signin_SOURCES = tests/test-signin.c
tests_test_signin_CFLAGS = $(TEST_CFLAGS)
tests_test_signin_LDADD = $(TEST_LDADD)
tests_check_cache_SOURCES = tests/check-cache.c
tests_check_cache_CFLAGS = $(TEST_CFLAGS)
tests_check_cache_LDADD = $(TEST_LDADD)
tests_test_proxy_SOURCES = tests/test-proxy.c
tests_test_proxy_CFLAGS = $(TEST_CFLAGS)
tests_test_proxy_LDADD = $(TEST_LDADD)
tests_test_rollover_SOURCES = tests/test-rollover.c
tests_test_rollover_CFLAGS = $(TEST_CFLAGS)
tests_test_rollover_LDADD = $(TEST_LDADD)
tests_test_writes_SOURCES = tests/test-writes.c
tests_test_writes_CFLAGS = $(TEST_CFLAGS)
tests_test_writes_LDADD = $(TEST_LDADD)
tests_test_systemd_SOURCES = tests/test-systemd.c
tests_test_systemd_CFLAGS = $(TEST_CFLAGS)
tests_test_systemd_LDADD = $(TEST_LDADD)
tests_test_security_SOURCES = tests/test-security.c
tests_test_security_CFLAGS = $(TEST_CFLAGS)
tests_test_security_LDADD = $(TEST_LDADD) -lm
tests_test_exports_SOURCES = tests/test-exports.c
tests_test_exports_CFLAGS = $(TEST_CFLAGS)
tests_test_exports_LDADD = $(TEST_LDADD)
tests_test_loop_SOURCES = tests/test-loop.c
tests_test_loop_CFLAGS = $(TEST_CFLAGS)
tests_test_loop_LDADD = $(TEST_LDADD)
tests_test_recovery_SOURCES = tests/test-recovery.c
tests_test_recovery_CFLAGS = $(TEST_CFLAGS)
tests_test_recovery_LDADD = $(TEST_LDADD)
tests_test_readonly_SOURCES = tests/test-readonly.c
tests_test_readonly_CFLAGS = $(TEST_CFLAGS)
tests_test_readonly_LDADD = $(TEST_LDADD)
tests_test_crashloop_SOURCES = tests/test-crashloop.c tests/workload.c tests/workload.h
tests_test_crashloop_CFLAGS = $(TEST_CFLAGS)
tests_test_crashloop_LDADD = $(TEST_LDADD)
tests_test_storm_SOURCES = tests/test-storm.c tests/workload.c tests/workload.h
tests_test_storm_CFLAGS = $(TEST_CFLAGS)
tests_test_storm_LDADD = $(TEST_LDADD)
tests_test_fulldisk_SOURCES = tests/test-fulldisk.c tests/workload.c tests/workload.h
tests_test_fulldisk_CFLAGS = $(TEST_CFLAGS)
tests_test_fulldisk_LDADD = $(TEST_LDADD)
tests_test_sim_SOURCES = tests/test-sim.c
tests_test_sim_CFLAGS = $(TEST_CFLAGS)
tests_test_sim_LDADD = $(TEST_LDADD)
tests_test_sim_visierd_SOURCES = tests/test-sim.c
tests_test_sim_visierd_CFLAGS = $(TEST_CFLAGS) -DTEST_SIM_VISIERD
tests_test_sim_visierd_LDADD = $(TEST_LDADD)
tests_test_upstream_async_SOURCES = tests/test-upstream-async.c
tests_test_upstream_async_CFLAGS = $(TEST_CFLAGS)
tests_test_upstream_async_LDADD = $(TEST_LDADD)
tests_test_ui_SOURCES = tests/test-ui.c
tests_test_ui_CFLAGS = $(TEST_CFLAGS)
tests_test_ui_LDADD = $(TEST_LDADD)
tests_test_cli_SOURCES = tests/test-cli.c
tests_test_cli_CFLAGS = $(TEST_CFLAGS)
tests_test_cli_LDADD = $(TEST_LDADD)

# Integration tests need both programs built first.
$(integration_tests): visierd$(EXEEXT) visier-sim$(EXEEXT)
