/* counter.c: a qemu TCG plugin (qemu-user 7.2, aarch64 guests) that counts the instructions a program
 * executes inside marked windows, by class and by translation block.
 *
 * Why: under emulation the clock means nothing, but the instructions executed are exact, so two
 * implementations of one model on one ISA compare with no noise. A program marks its inference with
 * syscall(EDGEVIT_MARK, 1) before and syscall(EDGEVIT_MARK, 2) after (an unallocated number: the kernel,
 * and qemu, answer ENOSYS); only blocks entered between the two count. Start-up, loading and bundle
 * verification are outside.
 *
 * Each instruction is classed once, when its block is translated, from its encoding (qemu 7.2's
 * capstone 4 predates dotprod and prints SDOT as ".byte"); every block counts its executions with an
 * inline add. Where blocks run is resolved later (results/arm/symbols.py): this plugin records where the
 * guest mapped each file it opened (openat + mmap at offset 0), read from guest memory through the host
 * address qemu gives a translated instruction (user mode maps the guest at a fixed offset).
 *
 * Arguments: out=FILE (the report; required). Report lines, whitespace separated:
 *   counter 1                                    format version
 *   total INSNS                                  every instruction the program executed
 *   windows N                                    marked windows closed
 *   map ADDR LENGTH PATH                         a file the guest mapped at offset 0 (hex ADDR, LENGTH)
 *   block VADDR EXECS INSNS C0..C7 LOAD_B STORE_B  a block run in windows: hex start, executions in windows,
 *                                                instructions, per class (CLASS_NAMES order), bytes loaded / stored
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define EDGEVIT_MARK 0x4556 /* "EV" */
#define MARK_BEGIN 1
#define MARK_END 2
#define SYS_OPENAT 56
#define SYS_CLOSE 57
#define SYS_MMAP 222
#define MAX_FDS 4096
#define MAX_VCPUS 256

enum { DOT, MUL, ASIMD, FP, LOAD, STORE, SCALAR, BRANCH, N_CLASSES };

typedef struct Block {
    uint64_t vaddr;
    uint64_t execs;     /* every execution (the inline add) */
    uint64_t at_begin;  /* execs when the open window began */
    uint64_t in_windows;
    uint32_t insns, classes[N_CLASSES], load_bytes, store_bytes;
    struct Block *next;
} Block;

typedef struct {
    int64_t num;
    uint64_t path, fd, offset, length;
} PendingSyscall;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Block *blocks;
static uint64_t windows;
static int window_open;
static intptr_t guest_base; /* host address - guest address, learned from the first translated block */
static int guest_base_known;
static char *fd_paths[MAX_FDS];
static PendingSyscall pending[MAX_VCPUS];
static FILE *maps; /* map lines, written as they happen into a temporary file, copied into the report */
static const char *out_path;

/* ---- instruction classes from the A64 encoding ---- */

static uint32_t bits(uint32_t insn, int high, int low) { return (insn >> low) & ((1u << (high - low + 1)) - 1); }

/* Loads and stores (op0 = x1x0): the class, and the bytes moved into *bytes. */
static int load_store(uint32_t i, uint32_t *bytes) {
    uint32_t size = bits(i, 31, 30), v = bits(i, 26, 26), load = bits(i, 22, 22);
    if ((i & 0xBF000000u) == 0x0C000000u) { /* AdvSIMD load/store multiple structures */
        static const uint8_t regs[16] = {4, 0, 4, 0, 3, 0, 3, 1, 2, 0, 2, 0, 0, 0, 0, 0};
        *bytes = regs[bits(i, 15, 12)] * (bits(i, 30, 30) ? 16u : 8u);
        return load ? LOAD : STORE;
    }
    if ((i & 0xBF000000u) == 0x0D000000u) { /* AdvSIMD load/store single structure (and replicate) */
        uint32_t opcode = bits(i, 15, 13), scale = opcode >> 1, sz = bits(i, 11, 10);
        uint32_t elements = (((opcode & 1) << 1) | bits(i, 21, 21)) + 1;
        uint32_t element = scale == 3 ? 1u << sz : scale == 2 ? (sz & 1 ? 8u : 4u) : 1u << scale;
        *bytes = elements * element;
        return load ? LOAD : STORE;
    }
    if (bits(i, 29, 24) == 0x08) { /* exclusive / ordered */
        *bytes = (1u << size) * ((size >> 1) && bits(i, 21, 21) ? 2u : 1u);
        return load ? LOAD : STORE;
    }
    if (bits(i, 29, 27) == 3 && !bits(i, 24, 24)) { /* literal */
        static const uint8_t gp[4] = {4, 8, 4, 0}, simd[4] = {4, 8, 16, 0};
        *bytes = (v ? simd : gp)[size];
        return LOAD;
    }
    if (bits(i, 29, 24) == 0x19) { /* LDAPR / STLUR (unscaled, release-consistent) */
        *bytes = 1u << size;
        return bits(i, 23, 22) ? LOAD : STORE;
    }
    if (bits(i, 29, 27) == 5) { /* pair */
        static const uint8_t gp[4] = {4, 4, 8, 0}, simd[4] = {4, 8, 16, 0};
        *bytes = 2u * (v ? simd : gp)[size];
        return load ? LOAD : STORE;
    }
    if (bits(i, 29, 27) == 7) { /* single register, every addressing mode; atomics */
        uint32_t opc = bits(i, 23, 22);
        if (!bits(i, 24, 24) && bits(i, 21, 21) && !bits(i, 11, 10)) { /* LDADD, SWP, ...: read-modify-write */
            *bytes = 1u << size;
            return LOAD;
        }
        if (v) {
            *bytes = opc >> 1 ? 16u : 1u << size;
            return opc & 1 ? LOAD : STORE;
        }
        *bytes = opc == 2 && size == 3 ? 0u : 1u << size; /* PRFM moves nothing */
        return opc ? LOAD : STORE;
    }
    *bytes = 0;
    return SCALAR; /* memory tagging and other rare forms */
}

/* Advanced SIMD by element (bits[28:24] = x1111, bit 10 = 0). */
static int by_element(uint32_t i) {
    uint32_t opcode = bits(i, 15, 12), u = bits(i, 29, 29);
    if (opcode == 0xE || (opcode == 0xF && !u)) return DOT; /* SDOT / UDOT, USDOT / SUDOT */
    if (((opcode & 3) == 1 && opcode != 0xD) || (u && (opcode & 9) == 1)) return FP; /* FMLA, FMLS, FMUL(X), FCMLA */
    if ((!u && (opcode == 0 || opcode == 4)) || (u && (opcode == 8 || opcode == 0xC))) return FP; /* FMLAL, FMLSL */
    return MUL; /* MUL, MLA, MLS, S/UMULL, S/UMLAL, SQDMULH, ... */
}

/* Advanced SIMD vector and scalar, and cryptography (op0 = x111, not scalar floating point). */
static int advanced_simd(uint32_t i) {
    uint32_t u = bits(i, 29, 29);
    if (bits(i, 24, 24)) {
        if (!bits(i, 10, 10)) return by_element(i);
        if (!bits(i, 22, 19)) return ASIMD; /* modified immediate: MOVI, MVNI, FMOV (immediate) */
        uint32_t opcode = bits(i, 15, 11); /* shift by immediate */
        return opcode == 0x1C || opcode == 0x1F ? FP : ASIMD; /* S/UCVTF, FCVTZS/U (fixed point) */
    }
    if (bits(i, 21, 21)) {
        if (bits(i, 10, 10)) { /* three same */
            uint32_t opcode = bits(i, 15, 11);
            if (opcode >= 0x18) return FP;
            return opcode == 0x12 || opcode == 0x13 || opcode == 0x16 ? MUL : ASIMD; /* MLA/MLS, MUL, SQ(R)DMULH */
        }
        if (!bits(i, 11, 11)) { /* three different */
            uint32_t opcode = bits(i, 15, 12);
            return opcode >= 8 && opcode <= 0xD ? MUL : ASIMD; /* S/UMLAL, S/UMLSL, S/UMULL, SQDMULL, ... */
        }
        uint32_t group = bits(i, 20, 17), opcode = bits(i, 16, 12);
        if (bits(i, 22, 17) == 0x3C) return FP; /* two-register miscellaneous (FP16) */
        if (group == 0) { /* two-register miscellaneous */
            if (opcode == 0x02 || opcode == 0x06) return MUL; /* S/UADDLP, S/UADALP */
            return opcode >= 0x0C && opcode != 0x12 && opcode != 0x13 && opcode != 0x14 ? FP : ASIMD;
        }
        if (group == 8) /* across lanes, scalar pairwise */
            return opcode == 0x0C || opcode == 0x0D || opcode == 0x0F ? FP : ASIMD;
        return ASIMD; /* AES and other cryptography */
    }
    if (bits(i, 10, 10)) {
        if (bits(i, 15, 15)) { /* three same (extra) */
            uint32_t opcode = bits(i, 14, 11);
            if (opcode == 2 || (opcode == 3 && !u)) return DOT; /* SDOT / UDOT, USDOT */
            if (opcode <= 1) return MUL; /* SQRDMLAH / SQRDMLSH */
            return opcode >= 8 ? FP : ASIMD; /* FCMLA, FCADD, BFDOT, ... */
        }
        return bits(i, 22, 22) ? FP : ASIMD; /* three same (FP16) ; copy: DUP, INS, UMOV, SMOV */
    }
    return ASIMD; /* permute, extract, table lookup, SHA */
}

static int is_branch(uint32_t i) {
    return (i & 0x7C000000u) == 0x14000000u     /* B, BL */
        || (i & 0xFF000000u) == 0x54000000u     /* B.cond */
        || (i & 0x7E000000u) == 0x34000000u     /* CBZ, CBNZ */
        || (i & 0x7E000000u) == 0x36000000u     /* TBZ, TBNZ */
        || (i & 0xFE000000u) == 0xD6000000u;    /* BR, BLR, RET */
}

/* The class of one instruction; *bytes: what a load or store moves (0 otherwise). */
static int classify(uint32_t i, uint32_t *bytes) {
    uint32_t op0 = bits(i, 28, 25);
    *bytes = 0;
    if ((op0 & 5) == 4) return load_store(i, bytes);
    if ((op0 & 0xE) == 0xA) return is_branch(i) ? BRANCH : SCALAR;
    if ((op0 & 7) == 7) return bits(i, 28, 28) && !bits(i, 30, 30) ? FP : advanced_simd(i);
    if (op0 == 2) return ASIMD; /* SVE */
    return SCALAR; /* data processing (immediate, register), reserved */
}

/* ---- translation and windows ---- */

static void learn_guest_base(const struct qemu_plugin_insn *insn) {
    if (!guest_base_known) {
        guest_base = (intptr_t)qemu_plugin_insn_haddr(insn) - (intptr_t)qemu_plugin_insn_vaddr(insn);
        guest_base_known = 1;
    }
}

static void on_translation(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    Block *block = calloc(1, sizeof(Block));
    size_t n = qemu_plugin_tb_n_insns(tb);
    block->vaddr = qemu_plugin_tb_vaddr(tb);
    block->insns = (uint32_t)n;
    for (size_t k = 0; k < n; k++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, k);
        uint32_t encoding, bytes;
        memcpy(&encoding, qemu_plugin_insn_data(insn), sizeof encoding);
        int cls = classify(encoding, &bytes);
        block->classes[cls]++;
        if (cls == LOAD) block->load_bytes += bytes;
        if (cls == STORE) block->store_bytes += bytes;
        if (k == 0) learn_guest_base(insn);
    }
    pthread_mutex_lock(&lock);
    block->next = blocks;
    blocks = block;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->execs, 1);
}

static void mark(uint64_t what) {
    pthread_mutex_lock(&lock);
    if (what == MARK_BEGIN && !window_open) {
        for (Block *b = blocks; b; b = b->next) b->at_begin = b->execs;
        window_open = 1;
    } else if (what == MARK_END && window_open) {
        for (Block *b = blocks; b; b = b->next) b->in_windows += b->execs - b->at_begin;
        window_open = 0;
        windows++;
    }
    /* blocks translated while a window is open start at execs = at_begin = 0 */
    pthread_mutex_unlock(&lock);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    if (num == EDGEVIT_MARK) {
        mark(a1);
        return;
    }
    if (vcpu >= MAX_VCPUS) return;
    pending[vcpu] = (PendingSyscall){num, a2, a5, a6, a2};
    if (num == SYS_CLOSE && a1 < MAX_FDS) {
        pthread_mutex_lock(&lock);
        free(fd_paths[a1]);
        fd_paths[a1] = NULL;
        pthread_mutex_unlock(&lock);
    }
}

static void on_syscall_return(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, int64_t ret) {
    if (vcpu >= MAX_VCPUS || pending[vcpu].num != num || ret < 0) return;
    PendingSyscall *call = &pending[vcpu];
    pthread_mutex_lock(&lock);
    if (num == SYS_OPENAT && ret < MAX_FDS && guest_base_known) {
        free(fd_paths[ret]);
        fd_paths[ret] = strdup((const char *)(call->path + guest_base));
    } else if (num == SYS_MMAP && call->fd < MAX_FDS && fd_paths[call->fd] && call->offset == 0 && maps) {
        fprintf(maps, "map %" PRIx64 " %" PRIx64 " %s\n", (uint64_t)ret, call->length, fd_paths[call->fd]);
    }
    pthread_mutex_unlock(&lock);
}

static void report_at_exit(qemu_plugin_id_t id, void *unused) {
    FILE *out = fopen(out_path, "w");
    if (!out) {
        qemu_plugin_outs("counter: cannot write the report\n");
        return;
    }
    uint64_t total = 0;
    for (Block *b = blocks; b; b = b->next) total += b->execs * b->insns;
    fprintf(out, "counter 1\ntotal %" PRIu64 "\nwindows %" PRIu64 "\n", total, windows);
    if (maps) {
        char line[4096];
        rewind(maps);
        while (fgets(line, sizeof line, maps)) fputs(line, out);
    }
    for (Block *b = blocks; b; b = b->next) {
        if (!b->in_windows) continue;
        fprintf(out, "block %" PRIx64 " %" PRIu64 " %u", b->vaddr, b->in_windows, b->insns);
        for (int c = 0; c < N_CLASSES; c++) fprintf(out, " %u", b->classes[c]);
        fprintf(out, " %u %u\n", b->load_bytes, b->store_bytes);
    }
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int k = 0; k < argc; k++)
        if (strncmp(argv[k], "out=", 4) == 0) out_path = argv[k] + 4;
    if (!out_path || strcmp(info->target_name, "aarch64") != 0 || info->system_emulation) {
        fprintf(stderr, "counter: needs out=FILE and an aarch64 user-mode guest\n");
        return 1;
    }
    maps = tmpfile();
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translation);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_vcpu_syscall_ret_cb(id, on_syscall_return);
    qemu_plugin_register_atexit_cb(id, report_at_exit, NULL);
    return 0;
}
