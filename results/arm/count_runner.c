/* count-runner: an edgevit bundle's inference between the instruction counter's window marks.
 *
 *     count-runner BUNDLE IMAGE WARMUP REPEAT
 *
 * Opens the bundle on one thread (edgevit.h: verified, loaded), preprocesses IMAGE once, runs WARMUP
 * unmarked inferences, then REPEAT inferences each inside syscall(EDGEVIT_MARK, 1) ... (EDGEVIT_MARK, 2)
 * (results/arm/counter.c). Nothing is timed: the instructions executed depend on nothing but the input.
 * Prints {"top1": CLASS} (or {"top1": null} for a features bundle) on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "edgevit.h"

#define EDGEVIT_MARK 0x4556

static int fail(const char *what) {
    fprintf(stderr, "error: %s: %s\n", what, edgevit_last_error());
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: count-runner BUNDLE IMAGE WARMUP REPEAT\n");
        return 2;
    }
    long warmup = strtol(argv[3], NULL, 10), repeat = strtol(argv[4], NULL, 10);
    edgevit_model *model = edgevit_open(argv[1], 1);
    if (!model) return fail(argv[1]);
    if (edgevit_preprocess_file(model, argv[2]) != 0) return fail(argv[2]);
    for (long k = 0; k < warmup; k++)
        if (edgevit_run(model) != 0) return fail("run");
    for (long k = 0; k < repeat; k++) {
        syscall(EDGEVIT_MARK, 1);
        int status = edgevit_run(model);
        syscall(EDGEVIT_MARK, 2);
        if (status != 0) return fail("run");
    }
    edgevit_class best;
    if (edgevit_top_k(model, 1, &best) == 1)
        printf("{\"top1\": %d}\n", best.index);
    else
        printf("{\"top1\": null}\n");
    edgevit_close(model);
    return 0;
}
