# visier-sim: the Visier simulator. Owned by the simulator's sources in this folder.
bin_PROGRAMS += visier-sim
visier_sim_SOURCES = \
	src/sim/sim-main.c \
	src/sim/sim-auth.c \
	src/sim/sim-auth.h \
	src/shared/clock.c \
	src/shared/clock.h \
	src/sim/sim-counters.c \
	src/sim/sim-counters.h \
	src/sim/sim-directory.c \
	src/sim/sim-directory.h \
	src/sim/sim-faults.c \
	src/sim/sim-faults.h \
	src/sim/sim-http.c \
	src/sim/sim-http.h \
	src/sim/sim-model.c \
	src/sim/sim-model.h \
	src/sim/sim-model-data.c \
	src/sim/sim-model-data.h \
	src/shared/parse.c \
	src/sim/sim-permissions.c \
	src/sim/sim-permissions.h \
	src/sim/sim-query.c \
	src/sim/sim-query.h \
	src/sim/sim-query-data.c \
	src/sim/sim-query-data.h \
	src/shared/parse.h \
	src/sim/sim-rate.c \
	src/sim/sim-requests.c \
	src/sim/sim-requests.h \
	src/sim/sim-rate.h \
	src/sim/sim-schema.c \
	src/sim/sim-schema.h \
	src/sim/sim-users.c \
	src/sim/sim-users.h \
	src/sim/sim-versions.c \
	src/sim/sim-versions.h
visier_sim_CFLAGS = $(AM_CFLAGS) $(MHD_CFLAGS) $(JANSSON_CFLAGS) $(SYSTEMD_CFLAGS)
visier_sim_LDADD = $(MHD_LIBS) $(JANSSON_LIBS) $(SYSTEMD_LIBS)
