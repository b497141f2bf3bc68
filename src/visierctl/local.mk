# visierctl: the command-line client of visierd's local API (libcurl and jansson only).
bin_PROGRAMS += visierctl
visierctl_SOURCES = \
	src/shared/macro.h \
	src/shared/clock.c src/shared/clock.h \
	src/visierctl/main.c \
	src/visierctl/client.c src/visierctl/client.h \
	src/visierctl/commands.c src/visierctl/commands.h \
	src/visierctl/options.c src/visierctl/options.h \
	src/visierctl/output.c src/visierctl/output.h \
	src/visierctl/screen.c src/visierctl/screen.h
visierctl_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
visierctl_LDADD = $(CURL_LIBS) $(JANSSON_LIBS)
