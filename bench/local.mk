# Benchmarks (see bench/README.md). Nothing here is built by `make` or run by `make check`:
# the scripts compile their C helpers themselves with cc and pkg-config, and
# `make bench/post-many bench/sqlite-insert-loop bench/store-submit-rate bench/budget-take` builds the same
# helpers with the project's warning set, on demand.
EXTRA_DIST += bench/lib.sh bench/rollover.sh bench/cache-load.sh bench/proxy-nginx.sh bench/loop-reads.sh bench/holds-probe.sh bench/idle-conns.sh bench/write-coalescing.sh bench/mixed-writes.sh bench/enqueue-rate.sh bench/post-creates.lua bench/export-stream.sh bench/post-many.c bench/sqlite-insert-loop.c \
	bench/store-scale.sh bench/store-submit-rate.c bench/fleet.sh bench/budget-take.c bench/fleet-coalesce.sh

EXTRA_PROGRAMS = bench/post-many bench/sqlite-insert-loop bench/store-submit-rate bench/budget-take
CLEANFILES += $(EXTRA_PROGRAMS)

bench_post_many_SOURCES = bench/post-many.c
bench_post_many_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS)
bench_post_many_LDADD = $(CURL_LIBS) -lpthread

bench_sqlite_insert_loop_SOURCES = bench/sqlite-insert-loop.c
bench_sqlite_insert_loop_CFLAGS = $(AM_CFLAGS) $(SQLITE_CFLAGS)
bench_sqlite_insert_loop_LDADD = $(SQLITE_LIBS) -lpthread

bench_store_submit_rate_SOURCES = bench/store-submit-rate.c
bench_store_submit_rate_CFLAGS = $(AM_CFLAGS) $(VISIERD_DEP_CFLAGS) -I$(top_srcdir)/src/visierd
bench_store_submit_rate_LDADD = libvisierd-core.a $(VISIERD_DEP_LIBS) -lpthread

bench_budget_take_SOURCES = bench/budget-take.c
bench_budget_take_CFLAGS = $(AM_CFLAGS) $(VISIERD_DEP_CFLAGS) -I$(top_srcdir)/src/visierd
bench_budget_take_LDADD = libvisierd-core.a $(VISIERD_DEP_LIBS) -lpthread
