# visierd: the daemon. Its subsystems build into a library the unit tests link too.
noinst_LIBRARIES += libvisierd-core.a
libvisierd_core_a_SOURCES = \
	src/shared/macro.h \
	src/shared/clock.c src/shared/clock.h \
	src/shared/notify.c src/shared/notify.h \
	src/shared/parse.c src/shared/parse.h \
	src/visierd/api.c \
	src/visierd/api-signin.c src/visierd/api-signin.h \
	src/visierd/authfail.c src/visierd/authfail.h \
	src/visierd/session.c src/visierd/session.h \
	src/visierd/policy.c src/visierd/policy.h src/visierd/policy-table.h \
	src/visierd/cache.c src/visierd/cache.h \
	src/visierd/coalesce.c src/visierd/coalesce.h \
	src/visierd/config.c src/visierd/config.h \
	src/visierd/db.c src/visierd/db.h src/visierd/db-internal.h \
	src/visierd/db-pg.c src/visierd/db-sqlite.c \
	src/visierd/dev.c src/visierd/dev.h \
	src/visierd/exports.c src/visierd/exports.h \
	src/visierd/history.c src/visierd/history.h \
	src/visierd/http.c src/visierd/http.h \
	src/visierd/jobs.c src/visierd/jobs.h \
	src/visierd/jobwatch.c src/visierd/jobwatch.h \
	src/visierd/fleetdb.c src/visierd/fleetdb.h \
	src/visierd/fleetbudget.c src/visierd/fleetbudget.h \
	src/visierd/lease.c src/visierd/lease.h \
	src/visierd/fleet.c src/visierd/fleet.h \
	src/visierd/validate.c src/visierd/validate.h src/visierd/validate-schema.h \
	src/visierd/publisher.c src/visierd/publisher.h \
	src/visierd/runner.c src/visierd/runner.h \
	src/visierd/log.c src/visierd/log.h \
	src/visierd/manager.c src/visierd/manager.h \
	src/visierd/metrics.c src/visierd/metrics.h \
	src/visierd/ratelimit.c src/visierd/ratelimit.h \
	src/visierd/secret.c src/visierd/secret.h \
	src/visierd/store.c src/visierd/store.h \
	src/visierd/store-pg-schema.c src/visierd/store-pg-schema.h \
	src/visierd/token.c src/visierd/token.h \
	src/visierd/ui.c src/visierd/ui.h \
	src/visierd/tcpbound.c src/visierd/tcpbound.h \
	src/visierd/upstream.c src/visierd/upstream.h \
	src/visierd/worker.c src/visierd/worker.h
VISIERD_DEP_CFLAGS = $(MHD_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS) $(SYSTEMD_CFLAGS) $(SQLITE_CFLAGS) $(INIH_CFLAGS) $(LIBPQ_CFLAGS)
VISIERD_DEP_LIBS = $(MHD_LIBS) $(CURL_LIBS) $(JANSSON_LIBS) $(SYSTEMD_LIBS) $(SQLITE_LIBS) $(INIH_LIBS) $(LIBPQ_LIBS) -lm
libvisierd_core_a_CFLAGS = $(AM_CFLAGS) $(VISIERD_DEP_CFLAGS)
libvisierd_core_a_CPPFLAGS = $(AM_CPPFLAGS) -DUI_ASSET_DIR='"$(abs_top_srcdir)/src/visierd/ui"'

# The /ui page: real files in the tree, assembled into ui.c's object (.incbin), which the
# compiler's dependency tracking does not see: hence the rule.
visierd_ui_assets = src/visierd/ui/index.html src/visierd/ui/ui.css src/visierd/ui/ui.js
EXTRA_DIST += $(visierd_ui_assets)
src/visierd/libvisierd_core_a-ui.$(OBJEXT): $(visierd_ui_assets)

sbin_PROGRAMS += visierd
visierd_SOURCES = src/visierd/main.c
visierd_CFLAGS = $(AM_CFLAGS) $(VISIERD_DEP_CFLAGS)
visierd_LDADD = libvisierd-core.a $(VISIERD_DEP_LIBS)
