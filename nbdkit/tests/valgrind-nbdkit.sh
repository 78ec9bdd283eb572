#!/bin/sh
# nbdkit under valgrind's memcheck, for `make test-nbdkit-valgrind` (NBDKIT=this
# script): each server writes its report to $VALGRIND_LOGS/vg.PID.log, which stays
# empty when memcheck finds nothing.
exec valgrind --quiet --error-exitcode=99 --log-file="$VALGRIND_LOGS/vg.%p.log" nbdkit "$@"
