# visierctl's integration test: runs the real visierctl against the real visierd and
# visier-sim (see tests/harness.h). Uses TEST_CFLAGS and TEST_LDADD from tests/local.mk.
visierctl_tests = tests/test-visierctl
check_PROGRAMS += $(visierctl_tests)
TESTS += $(visierctl_tests)
tests_test_visierctl_SOURCES = tests/test-visierctl.c
tests_test_visierctl_CFLAGS = $(TEST_CFLAGS)
tests_test_visierctl_LDADD = $(TEST_LDADD) -lutil

# The test runs all three programs.
$(visierctl_tests): visierd$(EXEEXT) visier-sim$(EXEEXT) visierctl$(EXEEXT)
