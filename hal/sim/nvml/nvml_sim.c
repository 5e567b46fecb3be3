/*
 * rigd NVML simulator: a libnvidia-ml.so.1 that pynvml loads like the real one.
 *
 * Why: the build machines have no GPU, yet the NVML backend (hal/nvml.py) must run its real code
 * path, through the real pynvml, against the lowest layer. This library answers the NVML calls the
 * backend makes from a small physical model and a shared state file.
 *
 * State file (path in $RIGD_NVML_SIM_STATE, read at nvmlInit): line-based text, one record a line,
 * `kind key=value ...`. It holds the GPU list, the attached loads, injected faults, the settings that
 * NVML setters made (power limit, locked clocks, persistence) and a model checkpoint per GPU.
 * Every writer (NVML setters in any process, and the control entry point rigdSimControl used by
 * tests and the demo) takes flock() on `<state>.lock`, re-reads the file, checkpoints the model,
 * changes it, writes `<state>.tmp.<pid>` and renames it over the file. Readers re-read the file
 * when its inode, size or mtime changes, so every process sees the same GPUs.
 *
 * Model (evaluated from wall-clock time on every read, in closed form from the last checkpoint, so
 * all processes agree): power follows the attached load and clamps to the power limit; temperature
 * follows power with a first-order lag; energy integrates power; the SM clock drops in proportion
 * when power-limited (SW power cap throttle reason set). Loads whose process has exited are reaped.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define MAX_GPUS 16
#define MAX_LOADS 64
#define MAX_XIDS 32

#define EVENT_SBE 0x1ULL
#define EVENT_DBE 0x2ULL
#define EVENT_PSTATE 0x4ULL
#define EVENT_XID 0x8ULL
#define EVENT_CLOCK 0x10ULL
#define SUPPORTED_EVENTS (EVENT_SBE | EVENT_DBE | EVENT_PSTATE | EVENT_XID | EVENT_CLOCK)

#define REASON_GPU_IDLE 0x1ULL
#define REASON_APP_CLOCKS 0x2ULL
#define REASON_SW_POWER_CAP 0x4ULL
#define REASON_SW_THERMAL 0x20ULL
#define SUPPORTED_REASONS 0x1FFULL

/* RIGD_SIM_LEGACY_DRIVER: an R470-era driver that lacks newer entry points (energy counter,
 * ClocksEventReasons, ComputeRunningProcesses_v3), so clients meet NVML_ERROR_FUNCTION_NOT_FOUND. */
#ifdef RIGD_SIM_LEGACY_DRIVER
#define DRIVER_VERSION "470.256.02"
#define NVML_VERSION "11.470.256.02"
#define CUDA_VERSION 11040
#else
#define DRIVER_VERSION "550.54.15"
#define NVML_VERSION "12.550.54.15"
#define CUDA_VERSION 12040
#endif

/* ---- GPU profiles (datasheet figures) ---------------------------------------------------- */

typedef struct {
    const char *key;
    const char *name;
    unsigned long long mem_total_bytes;
    unsigned long long mem_reserved_bytes;
    unsigned pci_device_id;
    unsigned power_default_mw, power_min_mw, power_max_mw;
    double idle_w, full_load_w;          /* board power at 0% and 100% utilization, max clocks */
    unsigned sm_max_mhz, sm_idle_mhz;
    unsigned mem_max_mhz, mem_idle_mhz;
    int fans;                            /* 0: passively cooled (SXM), no fan reading */
    double ambient_c, c_per_w, tau_s;    /* steady temp = ambient + power * c_per_w */
    double slowdown_c;                   /* SW thermal slowdown above this */
} profile_t;

static const profile_t PROFILES[] = {
    {"h100-sxm-80gb", "NVIDIA H100 80GB HBM3", 81559ULL << 20, 512ULL << 20, 0x233010DE,
     700000, 200000, 700000, 72.0, 690.0, 1980, 345, 2619, 2619, 0, 30.0, 0.055, 30.0, 87.0},
    {"a100-sxm-80gb", "NVIDIA A100-SXM4-80GB", 81920ULL << 20, 512ULL << 20, 0x20B210DE,
     400000, 100000, 400000, 55.0, 395.0, 1410, 210, 1593, 1593, 0, 30.0, 0.09, 30.0, 87.0},
    {"rtx-4090", "NVIDIA GeForce RTX 4090", 24564ULL << 20, 300ULL << 20, 0x268410DE,
     450000, 150000, 600000, 22.0, 440.0, 3105, 210, 10501, 405, 1, 25.0, 0.1, 20.0, 83.0},
};
#define NPROFILES ((int)(sizeof(PROFILES) / sizeof(PROFILES[0])))
static const unsigned BUS_NUMBERS[MAX_GPUS] = {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb,
                                               0x19, 0x2b, 0x3b, 0x5e, 0x9b, 0xac, 0xbb, 0xdc};

/* ---- shared state ------------------------------------------------------------------------- */

typedef struct {
    int profile;
    char uuid[64];
    unsigned bus;
    int lost;
    unsigned power_limit_mw; /* 0: default */
    unsigned sm_lock_min, sm_lock_max, mem_lock_min, mem_lock_max; /* 0,0: not locked */
    int persistence;
    double tau_s; /* 0: profile value */
    double ckpt_t, ckpt_temp_c, ckpt_energy_mj;
} gpu_t;

typedef struct {
    int gpu;
    unsigned pid;
    unsigned long long mem_bytes;
    unsigned util_pct;
} load_t;

typedef struct {
    int gpu;
    unsigned long long seq;
    unsigned code;
} xid_t;

typedef struct {
    unsigned long long generation;
    int no_permission;
    int drop_power_writes; /* fault: power-limit writes answer SUCCESS and change nothing */
    unsigned long long xid_seq;
    int ngpus;
    gpu_t gpus[MAX_GPUS];
    int nloads;
    load_t loads[MAX_LOADS];
    int nxids;
    xid_t xids[MAX_XIDS];
} state_t;

struct nvmlDevice_st { int index; };
typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct {
    unsigned long long mask[MAX_GPUS];
    unsigned long long last_seq;
} event_set_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_init_count = 0;
static char g_path[4096];
static state_t g_state;
static struct stat g_seen; /* stat of the file g_state came from */
static struct nvmlDevice_st g_handles[MAX_GPUS] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7},
                                                   {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int profile_by_key(const char *key) {
    for (int i = 0; i < NPROFILES; i++)
        if (strcmp(PROFILES[i].key, key) == 0) return i;
    return -1;
}

/* ---- parsing and writing the state file --------------------------------------------------- */

/* Finds `key=` in a tokenized record; returns the value or NULL. */
static const char *field(char **tokens, int ntokens, const char *key) {
    size_t n = strlen(key);
    for (int i = 1; i < ntokens; i++)
        if (strncmp(tokens[i], key, n) == 0 && tokens[i][n] == '=') return tokens[i] + n + 1;
    return NULL;
}

static unsigned long long field_u64(char **t, int n, const char *key, unsigned long long dflt) {
    const char *v = field(t, n, key);
    return v ? strtoull(v, NULL, 0) : dflt;
}

static double field_f(char **t, int n, const char *key, double dflt) {
    const char *v = field(t, n, key);
    return v ? strtod(v, NULL) : dflt;
}

static void field_pair(char **t, int n, const char *key, unsigned *a, unsigned *b) {
    const char *v = field(t, n, key);
    *a = *b = 0;
    if (v) sscanf(v, "%u,%u", a, b);
}

static int tokenize(char *line, char **tokens, int max) {
    int n = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && n < max; tok = strtok(NULL, " \t\r\n"))
        tokens[n++] = tok;
    return n;
}

static int parse_state(const char *text, state_t *st) {
    memset(st, 0, sizeof(*st));
    char *copy = strdup(text);
    if (!copy) return -1;
    char *save = NULL;
    int ok_header = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *t[24];
        int n = tokenize(line, t, 24);
        if (n == 0 || t[0][0] == '#') continue;
        if (strcmp(t[0], "rigd-nvml-sim") == 0) {
            ok_header = 1;
        } else if (strcmp(t[0], "generation") == 0 && n > 1) {
            st->generation = strtoull(t[1], NULL, 10);
        } else if (strcmp(t[0], "no_permission") == 0 && n > 1) {
            st->no_permission = atoi(t[1]) != 0;
        } else if (strcmp(t[0], "drop_power_writes") == 0 && n > 1) {
            st->drop_power_writes = atoi(t[1]) != 0;
        } else if (strcmp(t[0], "xid_seq") == 0 && n > 1) {
            st->xid_seq = strtoull(t[1], NULL, 10);
        } else if (strcmp(t[0], "gpu") == 0 && st->ngpus < MAX_GPUS) {
            gpu_t *g = &st->gpus[st->ngpus];
            const char *profile = field(t, n, "profile");
            g->profile = profile ? profile_by_key(profile) : -1;
            if (g->profile < 0) continue;
            const char *uuid = field(t, n, "uuid");
            snprintf(g->uuid, sizeof(g->uuid), "%s", uuid ? uuid : "GPU-unknown");
            g->bus = (unsigned)field_u64(t, n, "bus", BUS_NUMBERS[st->ngpus]);
            g->lost = (int)field_u64(t, n, "lost", 0);
            g->power_limit_mw = (unsigned)field_u64(t, n, "power_limit_mw", 0);
            field_pair(t, n, "sm_lock", &g->sm_lock_min, &g->sm_lock_max);
            field_pair(t, n, "mem_lock", &g->mem_lock_min, &g->mem_lock_max);
            g->persistence = (int)field_u64(t, n, "persistence", 0);
            g->tau_s = field_f(t, n, "tau_s", 0.0);
            const char *ck = field(t, n, "ckpt");
            if (ck) sscanf(ck, "%lf,%lf,%lf", &g->ckpt_t, &g->ckpt_temp_c, &g->ckpt_energy_mj);
            st->ngpus++;
        } else if (strcmp(t[0], "load") == 0 && st->nloads < MAX_LOADS) {
            load_t *l = &st->loads[st->nloads++];
            l->gpu = (int)field_u64(t, n, "gpu", 0);
            l->pid = (unsigned)field_u64(t, n, "pid", 0);
            l->mem_bytes = field_u64(t, n, "mem_bytes", 0);
            l->util_pct = (unsigned)field_u64(t, n, "util_pct", 0);
        } else if (strcmp(t[0], "xid") == 0 && st->nxids < MAX_XIDS) {
            xid_t *x = &st->xids[st->nxids++];
            x->gpu = (int)field_u64(t, n, "gpu", 0);
            x->seq = field_u64(t, n, "seq", 0);
            x->code = (unsigned)field_u64(t, n, "code", 0);
        }
    }
    free(copy);
    return ok_header ? 0 : -1;
}

static int write_state(const char *path, const state_t *st) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "rigd-nvml-sim 1\n# written by the rigd NVML simulator; see hal/sim/nvml\n");
    fprintf(f, "generation %llu\nno_permission %d\ndrop_power_writes %d\nxid_seq %llu\n",
            st->generation, st->no_permission, st->drop_power_writes, st->xid_seq);
    for (int i = 0; i < st->ngpus; i++) {
        const gpu_t *g = &st->gpus[i];
        fprintf(f,
                "gpu profile=%s uuid=%s bus=0x%02x lost=%d power_limit_mw=%u sm_lock=%u,%u "
                "mem_lock=%u,%u persistence=%d tau_s=%.6g ckpt=%.6f,%.6f,%.3f\n",
                PROFILES[g->profile].key, g->uuid, g->bus, g->lost, g->power_limit_mw,
                g->sm_lock_min, g->sm_lock_max, g->mem_lock_min, g->mem_lock_max, g->persistence,
                g->tau_s, g->ckpt_t, g->ckpt_temp_c, g->ckpt_energy_mj);
    }
    for (int i = 0; i < st->nloads; i++) {
        const load_t *l = &st->loads[i];
        fprintf(f, "load gpu=%d pid=%u mem_bytes=%llu util_pct=%u\n", l->gpu, l->pid,
                l->mem_bytes, l->util_pct);
    }
    for (int i = 0; i < st->nxids; i++) {
        const xid_t *x = &st->xids[i];
        fprintf(f, "xid gpu=%d seq=%llu code=%u\n", x->gpu, x->seq, x->code);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len <= 1) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) { free(buf); buf = NULL; break; }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Loads the state file into `st`; `seen` gets its stat. Returns 0 or -1. */
static int load_state(const char *path, state_t *st, struct stat *seen) {
    for (int attempt = 0; attempt < 3; attempt++) {
        struct stat before;
        if (stat(path, &before) != 0) return -1;
        char *text = read_file(path);
        if (!text) continue; /* renamed away between stat and open: retry */
        state_t parsed;
        int rc = parse_state(text, &parsed);
        free(text);
        if (rc == 0) {
            *st = parsed;
            *seen = before;
            return 0;
        }
    }
    return -1;
}

/* Caller holds g_mu. Re-reads the file if another process replaced it. */
static void refresh(void) {
    struct stat now;
    if (stat(g_path, &now) == 0 && !same_file(&now, &g_seen)) load_state(g_path, &g_state, &g_seen);
}

/* ---- physical model ------------------------------------------------------------------------ */

typedef struct {
    unsigned util_pct, mem_util_pct;
    unsigned long long mem_used_bytes;
    double power_w, demand_w, temp_c, energy_mj;
    unsigned sm_mhz, mem_mhz, fan_pct, pstate;
    unsigned long long reasons;
} reading_t;

/* A zombie has already released its GPU memory, so it counts as gone. */
static int process_alive(unsigned pid) {
    if (pid == 0) return 1;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return 0;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%u/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *end = strrchr(buf, ')'); /* "pid (comm) S ..." - comm may hold spaces */
    return !(end && end[1] == ' ' && end[2] == 'Z');
}

static unsigned limit_mw(const gpu_t *g) {
    return g->power_limit_mw ? g->power_limit_mw : PROFILES[g->profile].power_default_mw;
}

static double tau_of(const gpu_t *g) {
    return g->tau_s > 0 ? g->tau_s : PROFILES[g->profile].tau_s;
}

static void evaluate(const state_t *st, int index, double t, reading_t *r) {
    const gpu_t *g = &st->gpus[index];
    const profile_t *p = &PROFILES[g->profile];
    memset(r, 0, sizeof(*r));
    unsigned util = 0;
    for (int i = 0; i < st->nloads; i++) {
        if (st->loads[i].gpu != index) continue;
        util += st->loads[i].util_pct;
        r->mem_used_bytes += st->loads[i].mem_bytes;
    }
    r->util_pct = util > 100 ? 100 : util;
    double u = r->util_pct / 100.0;
    unsigned clock_cap = p->sm_max_mhz;
    if (g->sm_lock_max && g->sm_lock_max < clock_cap) clock_cap = g->sm_lock_max;
    double limit_w = limit_mw(g) / 1000.0;
    r->demand_w = p->idle_w + (p->full_load_w - p->idle_w) * u * clock_cap / p->sm_max_mhz;
    r->power_w = r->demand_w < limit_w ? r->demand_w : limit_w;
    if (r->util_pct == 0) {
        r->sm_mhz = g->sm_lock_min > p->sm_idle_mhz ? g->sm_lock_min : p->sm_idle_mhz;
        r->reasons |= REASON_GPU_IDLE;
        r->pstate = 8;
    } else {
        double clock = clock_cap;
        if (r->demand_w > limit_w) {
            clock = clock_cap * (limit_w - p->idle_w) / (r->demand_w - p->idle_w);
            r->reasons |= REASON_SW_POWER_CAP;
        }
        if (clock < p->sm_idle_mhz) clock = p->sm_idle_mhz;
        r->sm_mhz = (unsigned)(clock + 0.5);
        r->pstate = 0;
    }
    if (g->sm_lock_max && g->sm_lock_max < p->sm_max_mhz) r->reasons |= REASON_APP_CLOCKS;
    unsigned mem_cap = p->mem_max_mhz;
    if (g->mem_lock_max && g->mem_lock_max < mem_cap) mem_cap = g->mem_lock_max;
    r->mem_mhz = r->util_pct ? mem_cap : (p->mem_idle_mhz < mem_cap ? p->mem_idle_mhz : mem_cap);
    r->mem_util_pct = (unsigned)(r->util_pct * 0.6 + 0.5);
    double dt = t - g->ckpt_t;
    if (dt < 0) dt = 0;
    double steady = p->ambient_c + r->power_w * p->c_per_w;
    r->temp_c = steady + (g->ckpt_temp_c - steady) * exp(-dt / tau_of(g));
    r->energy_mj = g->ckpt_energy_mj + r->power_w * 1000.0 * dt;
    if (r->temp_c > p->slowdown_c) r->reasons |= REASON_SW_THERMAL;
    double fan = 30.0 + (r->temp_c - 35.0) * 1.6;
    r->fan_pct = fan < 30 ? 30 : fan > 100 ? 100 : (unsigned)(fan + 0.5);
}

/* Freezes every GPU's model at time t, so the state can change without a jump in temp/energy. */
static void checkpoint(state_t *st, double t) {
    for (int i = 0; i < st->ngpus; i++) {
        reading_t r;
        evaluate(st, i, t, &r);
        st->gpus[i].ckpt_t = t;
        st->gpus[i].ckpt_temp_c = r.temp_c;
        st->gpus[i].ckpt_energy_mj = r.energy_mj;
    }
}

/* ---- locked read-modify-write ---------------------------------------------------------------- */

typedef int (*mutator_t)(state_t *st, void *arg, char *err, size_t errlen);

static void reap_dead_loads(state_t *st) {
    int kept = 0;
    for (int i = 0; i < st->nloads; i++)
        if (process_alive(st->loads[i].pid)) st->loads[kept++] = st->loads[i];
    st->nloads = kept;
}

/* Runs `fn` on the freshest state under the cross-process lock and writes the result atomically.
 * `fresh_ok`: whether the file may be missing (configure creates it). */
static int modify_state(const char *path, mutator_t fn, void *arg, int fresh_ok, char *err,
                        size_t errlen) {
    char lock_path[4200];
    snprintf(lock_path, sizeof(lock_path), "%s.lock", path);
    int fd = open(lock_path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", lock_path, strerror(errno));
        return NVML_ERROR_OPERATING_SYSTEM;
    }
    flock(fd, LOCK_EX);
    state_t *st = calloc(1, sizeof(state_t));
    struct stat seen;
    int rc = NVML_SUCCESS;
    if (!st) {
        rc = NVML_ERROR_UNKNOWN;
    } else if (load_state(path, st, &seen) != 0 && !fresh_ok) {
        snprintf(err, errlen, "cannot read simulator state %s", path);
        rc = NVML_ERROR_DRIVER_NOT_LOADED;
    } else {
        double t = now_s();
        checkpoint(st, t);
        reap_dead_loads(st);
        rc = fn(st, arg, err, errlen);
        if (rc == NVML_SUCCESS && write_state(path, st) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            rc = NVML_ERROR_OPERATING_SYSTEM;
        }
    }
    free(st);
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

/* ---- init, errors, system ------------------------------------------------------------------- */

static nvmlReturn_t do_init(void) {
    pthread_mutex_lock(&g_mu);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (g_init_count == 0) {
        const char *path = getenv("RIGD_NVML_SIM_STATE");
        if (!path || !*path || strlen(path) >= sizeof(g_path)) {
            rc = NVML_ERROR_DRIVER_NOT_LOADED;
        } else {
            snprintf(g_path, sizeof(g_path), "%s", path);
            memset(&g_seen, 0, sizeof(g_seen));
            if (load_state(g_path, &g_state, &g_seen) != 0) rc = NVML_ERROR_DRIVER_NOT_LOADED;
        }
    }
    if (rc == NVML_SUCCESS) g_init_count++;
    pthread_mutex_unlock(&g_mu);
    return rc;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return do_init(); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init(); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_mu);
    nvmlReturn_t rc = g_init_count > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (g_init_count > 0) g_init_count--;
    pthread_mutex_unlock(&g_mu);
    return rc;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t rc) {
    switch (rc) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_OPERATING_SYSTEM: return "Operating System Error";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

/* Marks this library as the simulator, so the backend can set DeviceInfo.simulated. */
EXPORT const char *rigdSimVersion(void) { return "rigd-nvml-sim 1"; }

static nvmlReturn_t copy_string(char *buf, unsigned len, const char *value) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned len) {
    return g_init_count ? copy_string(buf, len, DRIVER_VERSION) : NVML_ERROR_UNINITIALIZED;
}
EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *buf, unsigned len) {
    return copy_string(buf, len, NVML_VERSION);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    *v = CUDA_VERSION;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }

EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned pid, char *buf, unsigned len) {
    char path[64], name[256] = {0};
    snprintf(path, sizeof(path), "/proc/%u/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f) return NVML_ERROR_NOT_FOUND;
    if (!fgets(name, sizeof(name), f)) name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    return copy_string(buf, len, name);
}

/* ---- device access ----------------------------------------------------------------------------- */

/* Locks, refreshes and resolves a handle; on success the caller must unlock g_mu. */
static nvmlReturn_t enter(nvmlDevice_t dev, gpu_t **out, int *index) {
    pthread_mutex_lock(&g_mu);
    if (g_init_count == 0) { pthread_mutex_unlock(&g_mu); return NVML_ERROR_UNINITIALIZED; }
    refresh();
    if (!dev || dev < g_handles || dev >= g_handles + MAX_GPUS || dev->index >= g_state.ngpus) {
        pthread_mutex_unlock(&g_mu);
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    gpu_t *g = &g_state.gpus[dev->index];
    if (g->lost) { pthread_mutex_unlock(&g_mu); return NVML_ERROR_GPU_IS_LOST; }
    *out = g;
    if (index) *index = dev->index;
    return NVML_SUCCESS;
}

#define ENTER(dev, gvar, idx)                                   \
    gpu_t *gvar;                                                \
    int idx;                                                    \
    do {                                                        \
        nvmlReturn_t rc_ = enter((dev), &gvar, &idx);           \
        if (rc_ != NVML_SUCCESS) return rc_;                    \
    } while (0)
#define LEAVE(rc) do { pthread_mutex_unlock(&g_mu); return (rc); } while (0)

static int keep_state(state_t *st, void *arg, char *err, size_t errlen) {
    (void)st, (void)arg, (void)err, (void)errlen;
    return NVML_SUCCESS;
}

static double g_next_reap_check = 0;

static void read_model(int index, reading_t *r) {
    /* a load whose process has exited no longer draws power: persist that for everyone.
     * Checked at most every 50 ms, so a telemetry snapshot stays cheap. */
    int dead = 0;
    double t = now_s();
    if (t >= g_next_reap_check) {
        g_next_reap_check = t + 0.05;
        for (int i = 0; i < g_state.nloads; i++)
            if (!process_alive(g_state.loads[i].pid)) dead = 1;
    }
    if (dead) {
        char err[256];
        pthread_mutex_unlock(&g_mu);
        modify_state(g_path, keep_state, NULL, 0, err, sizeof(err));
        pthread_mutex_lock(&g_mu);
        refresh();
    }
    evaluate(&g_state, index, now_s(), r);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    if (!g_init_count) LEAVE(NVML_ERROR_UNINITIALIZED);
    refresh();
    *count = (unsigned)g_state.ngpus;
    LEAVE(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *dev) {
    if (!dev) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    if (!g_init_count) LEAVE(NVML_ERROR_UNINITIALIZED);
    refresh();
    if (index >= (unsigned)g_state.ngpus) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (g_state.gpus[index].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
    *dev = &g_handles[index];
    LEAVE(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned index, nvmlDevice_t *dev) {
    return nvmlDeviceGetHandleByIndex_v2(index, dev);
}

static void format_bus_id(const gpu_t *g, char *buf, size_t len, int legacy) {
    snprintf(buf, len, legacy ? "%04X:%02X:00.0" : "%08X:%02X:00.0", 0, g->bus);
}

/* Finds a device by UUID or PCI bus id. */
static nvmlReturn_t find_device(const char *key, int by_bus, nvmlDevice_t *dev) {
    if (!key || !dev) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    if (!g_init_count) LEAVE(NVML_ERROR_UNINITIALIZED);
    refresh();
    for (int i = 0; i < g_state.ngpus; i++) {
        const gpu_t *g = &g_state.gpus[i];
        char bus[32], legacy[32];
        format_bus_id(g, bus, sizeof(bus), 0);
        format_bus_id(g, legacy, sizeof(legacy), 1);
        int match = by_bus ? (strcasecmp(key, bus) == 0 || strcasecmp(key, legacy) == 0)
                           : strcmp(key, g->uuid) == 0;
        if (!match) continue;
        if (g->lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
        *dev = &g_handles[i];
        LEAVE(NVML_SUCCESS);
    }
    LEAVE(NVML_ERROR_NOT_FOUND);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *dev) {
    return find_device(uuid, 0, dev);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus, nvmlDevice_t *dev) {
    return find_device(bus, 1, dev);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus, nvmlDevice_t *dev) {
    return find_device(bus, 1, dev);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t dev, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g;
    *out = (unsigned)i;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t dev, char *buf, unsigned len) {
    ENTER(dev, g, i);
    (void)i;
    LEAVE(copy_string(buf, len, PROFILES[g->profile].name));
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t dev, char *buf, unsigned len) {
    ENTER(dev, g, i);
    (void)i;
    LEAVE(copy_string(buf, len, g->uuid));
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t dev, char *buf, unsigned len) {
    ENTER(dev, g, i);
    char serial[32];
    snprintf(serial, sizeof(serial), "16523%08u", (unsigned)(g->bus * 97 + (unsigned)i));
    LEAVE(copy_string(buf, len, serial));
}

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t dev, nvmlPciInfo_t *pci) {
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)i;
    memset(pci, 0, sizeof(*pci));
    format_bus_id(g, pci->busIdLegacy, sizeof(pci->busIdLegacy), 1);
    format_bus_id(g, pci->busId, sizeof(pci->busId), 0);
    pci->bus = g->bus;
    pci->pciDeviceId = PROFILES[g->profile].pci_device_id;
    pci->pciSubSystemId = 0x16C110DE;
    LEAVE(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t dev, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(dev, pci);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t dev, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(dev, pci);
}

/* One macro per model-backed getter keeps each NVML entry point a one-liner. */
#define MODEL_GETTER(name, type, expr)                        \
    EXPORT nvmlReturn_t name(nvmlDevice_t dev, type *out) {  \
        if (!out) return NVML_ERROR_INVALID_ARGUMENT;        \
        ENTER(dev, g, i);                                    \
        reading_t r;                                         \
        read_model(i, &r);                                   \
        const profile_t *p = &PROFILES[g->profile];          \
        (void)p;                                             \
        *out = (type)(expr);                                 \
        LEAVE(NVML_SUCCESS);                                 \
    }

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t dev, unsigned sensor, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT; /* only NVML_TEMPERATURE_GPU */
    ENTER(dev, g, i);
    (void)g;
    reading_t r;
    read_model(i, &r);
    *out = (unsigned)(r.temp_c + 0.5);
    LEAVE(NVML_SUCCESS);
}

/* nvmlTemperature_v1_t: {unsigned version; nvmlTemperatureSensors_t sensorType; int temperature}
 * version = sizeof | 1 << 24 (NVML_STRUCT_VERSION(Temperature, 1)). R535 and newer have it. */
typedef struct { unsigned version; unsigned sensorType; int temperature; } nvmlTemperature_v1_t;
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t dev, nvmlTemperature_v1_t *t) {
    if (!t) return NVML_ERROR_INVALID_ARGUMENT;
    if (t->version != (unsigned)(sizeof(*t) | (1u << 24))) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned value;
    nvmlReturn_t rc = nvmlDeviceGetTemperature(dev, t->sensorType, &value);
    if (rc == NVML_SUCCESS) t->temperature = (int)value;
    return rc;
}

MODEL_GETTER(nvmlDeviceGetPowerUsage, unsigned, r.power_w * 1000.0 + 0.5)
#ifndef RIGD_SIM_LEGACY_DRIVER
MODEL_GETTER(nvmlDeviceGetTotalEnergyConsumption, unsigned long long, r.energy_mj)
MODEL_GETTER(nvmlDeviceGetCurrentClocksEventReasons, unsigned long long, r.reasons)
MODEL_GETTER(nvmlDeviceGetSupportedClocksEventReasons, unsigned long long, SUPPORTED_REASONS)
#endif
MODEL_GETTER(nvmlDeviceGetPerformanceState, unsigned, r.pstate)
MODEL_GETTER(nvmlDeviceGetPowerState, unsigned, r.pstate)
MODEL_GETTER(nvmlDeviceGetCurrentClocksThrottleReasons, unsigned long long, r.reasons)
MODEL_GETTER(nvmlDeviceGetPowerManagementLimit, unsigned, limit_mw(g))
MODEL_GETTER(nvmlDeviceGetEnforcedPowerLimit, unsigned, limit_mw(g))
MODEL_GETTER(nvmlDeviceGetPowerManagementDefaultLimit, unsigned, p->power_default_mw)
MODEL_GETTER(nvmlDeviceGetPersistenceMode, unsigned, g->persistence)
MODEL_GETTER(nvmlDeviceGetComputeMode, unsigned, 0)
MODEL_GETTER(nvmlDeviceGetSupportedClocksThrottleReasons, unsigned long long, SUPPORTED_REASONS)

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t dev, unsigned *min,
                                                                 unsigned *max) {
    if (!min || !max) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)i;
    *min = PROFILES[g->profile].power_min_mw;
    *max = PROFILES[g->profile].power_max_mw;
    LEAVE(NVML_SUCCESS);
}

typedef struct { unsigned gpu, memory; } nvmlUtilization_t;
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t dev, nvmlUtilization_t *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g;
    reading_t r;
    read_model(i, &r);
    out->gpu = r.util_pct;
    out->memory = r.mem_util_pct;
    LEAVE(NVML_SUCCESS);
}

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    reading_t r;
    read_model(i, &r);
    const profile_t *p = &PROFILES[g->profile];
    unsigned long long used = p->mem_reserved_bytes + r.mem_used_bytes;
    if (used > p->mem_total_bytes) used = p->mem_total_bytes;
    out->total = p->mem_total_bytes;
    out->used = used;
    out->free = p->mem_total_bytes - used;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (out->version != 0x02000028) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    ENTER(dev, g, i);
    reading_t r;
    read_model(i, &r);
    const profile_t *p = &PROFILES[g->profile];
    unsigned long long avail = p->mem_total_bytes - p->mem_reserved_bytes;
    unsigned long long used = r.mem_used_bytes > avail ? avail : r.mem_used_bytes;
    out->total = p->mem_total_bytes;
    out->reserved = p->mem_reserved_bytes;
    out->used = used;
    out->free = avail - used;
    LEAVE(NVML_SUCCESS);
}

enum { CLOCK_GRAPHICS = 0, CLOCK_SM = 1, CLOCK_MEM = 2, CLOCK_VIDEO = 3 };

static nvmlReturn_t clock_value(const reading_t *r, const profile_t *p, unsigned type, int max,
                                unsigned *out) {
    switch (type) {
    case CLOCK_GRAPHICS:
    case CLOCK_SM: *out = max ? p->sm_max_mhz : r->sm_mhz; return NVML_SUCCESS;
    case CLOCK_MEM: *out = max ? p->mem_max_mhz : r->mem_mhz; return NVML_SUCCESS;
    case CLOCK_VIDEO: *out = (unsigned)((max ? p->sm_max_mhz : r->sm_mhz) * 0.88); return NVML_SUCCESS;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t dev, unsigned type, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    reading_t r;
    read_model(i, &r);
    LEAVE(clock_value(&r, &PROFILES[g->profile], type, 0, out));
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t dev, unsigned type, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    reading_t r;
    read_model(i, &r);
    LEAVE(clock_value(&r, &PROFILES[g->profile], type, 1, out));
}

EXPORT nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t dev, unsigned type, unsigned id, unsigned *out) {
    if (!out || id > 3) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    reading_t r;
    read_model(i, &r);
    LEAVE(clock_value(&r, &PROFILES[g->profile], type, id != 0, out));
}

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t dev, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)i;
    if (!PROFILES[g->profile].fans) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    *out = 1;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t dev, unsigned fan, unsigned *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    if (!PROFILES[g->profile].fans) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (fan != 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    reading_t r;
    read_model(i, &r);
    *out = r.fan_pct;
    LEAVE(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t dev, unsigned *out) {
    return nvmlDeviceGetFanSpeed_v2(dev, 0, out);
}

typedef struct {
    unsigned pid;
    unsigned long long usedGpuMemory;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

static nvmlReturn_t compute_processes(nvmlDevice_t dev, unsigned *count, nvmlProcessInfo_t *infos) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g;
    reading_t r;
    read_model(i, &r); /* reaps loads of exited processes */
    unsigned n = 0;
    for (int k = 0; k < g_state.nloads; k++)
        if (g_state.loads[k].gpu == i && g_state.loads[k].pid) n++;
    if (n > *count || (n > 0 && !infos)) {
        *count = n;
        LEAVE(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned j = 0;
    for (int k = 0; k < g_state.nloads; k++) {
        const load_t *l = &g_state.loads[k];
        if (l->gpu != i || !l->pid) continue;
        infos[j].pid = l->pid;
        infos[j].usedGpuMemory = l->mem_bytes;
        infos[j].gpuInstanceId = 0xFFFFFFFF;
        infos[j].computeInstanceId = 0xFFFFFFFF;
        j++;
    }
    *count = n;
    LEAVE(NVML_SUCCESS);
}
#ifndef RIGD_SIM_LEGACY_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned *c,
                                                            nvmlProcessInfo_t *p) {
    return compute_processes(d, c, p);
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned *c,
                                                            nvmlProcessInfo_t *p) {
    return compute_processes(d, c, p);
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned *c,
                                                         nvmlProcessInfo_t *p) {
    return compute_processes(d, c, p);
}

/* No graphics (display) contexts on a compute rig. */
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t dev, unsigned *count,
                                                             nvmlProcessInfo_t *infos) {
    (void)infos;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g;
    (void)i;
    *count = 0;
    LEAVE(NVML_SUCCESS);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t d, unsigned *c,
                                                             nvmlProcessInfo_t *p) {
    return nvmlDeviceGetGraphicsRunningProcesses_v3(d, c, p);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t d, unsigned *c,
                                                          nvmlProcessInfo_t *p) {
    return nvmlDeviceGetGraphicsRunningProcesses_v3(d, c, p);
}

/* ---- setters: validated, permission-checked, persisted into the state file --------------------- */

typedef struct {
    int index;
    int what; /* 0 power, 1 sm lock, 2 sm reset, 3 mem lock, 4 mem reset, 5 persistence */
    unsigned a, b;
} setting_t;

static int apply_setting(state_t *st, void *arg, char *err, size_t errlen) {
    setting_t *s = arg;
    if (s->index >= st->ngpus) {
        snprintf(err, errlen, "gpu %d is gone", s->index);
        return NVML_ERROR_GPU_IS_LOST;
    }
    gpu_t *g = &st->gpus[s->index];
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;
    if (st->no_permission) return NVML_ERROR_NO_PERMISSION;
    switch (s->what) {
    case 0:
        /* Some drivers accept a limit and keep the old one (observed under vGPU and with a
         * conflicting nvidia-smi/DCGM policy): SUCCESS, nothing changed. */
        if (!st->drop_power_writes) g->power_limit_mw = s->a;
        break;
    case 1: g->sm_lock_min = s->a; g->sm_lock_max = s->b; break;
    case 2: g->sm_lock_min = g->sm_lock_max = 0; break;
    case 3: g->mem_lock_min = s->a; g->mem_lock_max = s->b; break;
    case 4: g->mem_lock_min = g->mem_lock_max = 0; break;
    case 5: g->persistence = s->a != 0; break;
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t set(nvmlDevice_t dev, int what, unsigned a, unsigned b) {
    ENTER(dev, g, i);
    const profile_t *p = &PROFILES[g->profile];
    int valid = 1;
    if (what == 0) valid = a >= p->power_min_mw && a <= p->power_max_mw;
    if (what == 1) valid = a <= b && b <= p->sm_max_mhz && a > 0;
    if (what == 3) valid = a <= b && b <= p->mem_max_mhz && a > 0;
    if (what == 5) valid = a <= 1;
    if (g_state.no_permission) LEAVE(NVML_ERROR_NO_PERMISSION);
    if (!valid) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    setting_t s = {i, what, a, b};
    char path[sizeof(g_path)];
    memcpy(path, g_path, sizeof(path));
    pthread_mutex_unlock(&g_mu);
    char err[256];
    nvmlReturn_t rc = modify_state(path, apply_setting, &s, 0, err, sizeof(err));
    pthread_mutex_lock(&g_mu);
    refresh();
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t dev, unsigned mw) {
    return set(dev, 0, mw, 0);
}

typedef struct { unsigned version, powerScope, powerValueMw; } nvmlPowerValue_v2_t;
EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit_v2(nvmlDevice_t dev, nvmlPowerValue_v2_t *v) {
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    if (v->powerScope != 0) return NVML_ERROR_NOT_SUPPORTED; /* GPU scope only */
    return set(dev, 0, v->powerValueMw, 0);
}
EXPORT nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t dev, unsigned lo, unsigned hi) {
    return set(dev, 1, lo, hi);
}
EXPORT nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t dev) { return set(dev, 2, 0, 0); }
EXPORT nvmlReturn_t nvmlDeviceSetMemoryLockedClocks(nvmlDevice_t dev, unsigned lo, unsigned hi) {
    return set(dev, 3, lo, hi);
}
EXPORT nvmlReturn_t nvmlDeviceResetMemoryLockedClocks(nvmlDevice_t dev) { return set(dev, 4, 0, 0); }
EXPORT nvmlReturn_t nvmlDeviceSetPersistenceMode(nvmlDevice_t dev, unsigned mode) {
    return set(dev, 5, mode, 0);
}

/* ---- events ------------------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlEventSetCreate(event_set_t **out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&g_mu);
    if (!g_init_count) LEAVE(NVML_ERROR_UNINITIALIZED);
    refresh();
    event_set_t *set = calloc(1, sizeof(*set));
    if (!set) LEAVE(NVML_ERROR_UNKNOWN);
    set->last_seq = g_state.xid_seq; /* only events raised after creation are delivered */
    *out = set;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetFree(event_set_t *set) {
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    free(set);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t dev, unsigned long long *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g;
    (void)i;
    *out = SUPPORTED_EVENTS;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t dev, unsigned long long types,
                                             event_set_t *set) {
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    if (types & ~SUPPORTED_EVENTS) return NVML_ERROR_NOT_SUPPORTED;
    ENTER(dev, g, i);
    (void)g;
    set->mask[i] |= types;
    LEAVE(NVML_SUCCESS);
}

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

EXPORT nvmlReturn_t nvmlEventSetWait_v2(event_set_t *set, nvmlEventData_t *data, unsigned timeout_ms) {
    if (!set || !data) return NVML_ERROR_INVALID_ARGUMENT;
    double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        pthread_mutex_lock(&g_mu);
        if (!g_init_count) LEAVE(NVML_ERROR_UNINITIALIZED);
        refresh();
        const xid_t *next = NULL;
        for (int k = 0; k < g_state.nxids; k++) {
            const xid_t *x = &g_state.xids[k];
            if (x->seq <= set->last_seq || x->gpu < 0 || x->gpu >= MAX_GPUS) continue;
            if (!(set->mask[x->gpu] & EVENT_XID)) continue;
            if (!next || x->seq < next->seq) next = x;
        }
        if (next) {
            memset(data, 0, sizeof(*data));
            data->device = &g_handles[next->gpu];
            data->eventType = EVENT_XID;
            data->eventData = next->code;
            data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFF;
            set->last_seq = next->seq;
            LEAVE(NVML_SUCCESS);
        }
        pthread_mutex_unlock(&g_mu);
        double left = deadline - now_s();
        if (left <= 0) return NVML_ERROR_TIMEOUT;
        double nap = left < 0.01 ? left : 0.01;
        struct timespec ts = {0, (long)(nap * 1e9)};
        nanosleep(&ts, NULL);
    }
}
EXPORT nvmlReturn_t nvmlEventSetWait(event_set_t *set, nvmlEventData_t *data, unsigned timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}

/* Per-process utilization samples: this model keeps none, so the answer is what a real driver
 * gives when no sample was taken since lastSeen: NOT_FOUND with a count of 0. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t dev, void *samples,
                                                    unsigned *count, unsigned long long last_seen) {
    (void)samples, (void)last_seen;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    ENTER(dev, g, i);
    (void)g, (void)i;
    *count = 0;
    LEAVE(NVML_ERROR_NOT_FOUND);
}

/* ---- commonly probed features this simulator does not model ----------------------------------- */

#define NOT_SUPPORTED_STUB(name) \
    EXPORT nvmlReturn_t name(void) { return NVML_ERROR_NOT_SUPPORTED; }

NOT_SUPPORTED_STUB(nvmlDeviceGetEncoderUtilization)
NOT_SUPPORTED_STUB(nvmlDeviceGetDecoderUtilization)
NOT_SUPPORTED_STUB(nvmlDeviceGetMigMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetEccMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetTotalEccErrors)
NOT_SUPPORTED_STUB(nvmlDeviceGetMemoryErrorCounter)
NOT_SUPPORTED_STUB(nvmlDeviceGetCudaComputeCapability)
NOT_SUPPORTED_STUB(nvmlDeviceGetFieldValues)
NOT_SUPPORTED_STUB(nvmlDeviceGetDriverModel)   /* WDDM/TCC: Windows only; Linux drivers export
                                                  it and answer NOT_SUPPORTED */
NOT_SUPPORTED_STUB(nvmlDeviceGetDriverModel_v2)
NOT_SUPPORTED_STUB(nvmlDeviceGetTemperatureThreshold)
NOT_SUPPORTED_STUB(nvmlDeviceGetBAR1MemoryInfo)
NOT_SUPPORTED_STUB(nvmlDeviceGetVbiosVersion)
NOT_SUPPORTED_STUB(nvmlDeviceGetInforomVersion)
NOT_SUPPORTED_STUB(nvmlDeviceGetBoardPartNumber)
NOT_SUPPORTED_STUB(nvmlDeviceGetRetiredPages)
NOT_SUPPORTED_STUB(nvmlDeviceGetRemappedRows)
NOT_SUPPORTED_STUB(nvmlDeviceGetNvLinkState)
NOT_SUPPORTED_STUB(nvmlDeviceGetPcieThroughput)
NOT_SUPPORTED_STUB(nvmlDeviceGetCurrPcieLinkGeneration)
NOT_SUPPORTED_STUB(nvmlDeviceGetCurrPcieLinkWidth)
NOT_SUPPORTED_STUB(nvmlDeviceGetMaxPcieLinkGeneration)
NOT_SUPPORTED_STUB(nvmlDeviceGetMaxPcieLinkWidth)
NOT_SUPPORTED_STUB(nvmlDeviceGetDisplayMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetDisplayActive)
NOT_SUPPORTED_STUB(nvmlDeviceGetAccountingMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetApplicationsClock)
NOT_SUPPORTED_STUB(nvmlDeviceGetDefaultApplicationsClock)
NOT_SUPPORTED_STUB(nvmlDeviceSetApplicationsClocks)
NOT_SUPPORTED_STUB(nvmlDeviceResetApplicationsClocks)
NOT_SUPPORTED_STUB(nvmlDeviceSetComputeMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetSupportedMemoryClocks)
NOT_SUPPORTED_STUB(nvmlDeviceGetSupportedGraphicsClocks)
NOT_SUPPORTED_STUB(nvmlDeviceGetViolationStatus)
NOT_SUPPORTED_STUB(nvmlDeviceGetSamples)
NOT_SUPPORTED_STUB(nvmlDeviceGetGpuOperationMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetVirtualizationMode)
NOT_SUPPORTED_STUB(nvmlDeviceGetPowerSource)
NOT_SUPPORTED_STUB(nvmlDeviceGetArchitecture)
NOT_SUPPORTED_STUB(nvmlDeviceGetBrand)
NOT_SUPPORTED_STUB(nvmlDeviceGetMinorNumber)
NOT_SUPPORTED_STUB(nvmlDeviceGetBoardId)
NOT_SUPPORTED_STUB(nvmlDeviceGetMultiGpuBoard)
NOT_SUPPORTED_STUB(nvmlDeviceGetAutoBoostedClocksEnabled)
NOT_SUPPORTED_STUB(nvmlDeviceGetClkMonStatus)
NOT_SUPPORTED_STUB(nvmlDeviceGetFanSpeedRPM)
NOT_SUPPORTED_STUB(nvmlEventSetWait_v3)

/* ---- control channel (tests, the demo) ----------------------------------------------------------- */

typedef struct {
    char *tokens[40];
    int ntokens;
} command_t;

static int gpu_arg(const state_t *st, command_t *c, char *err, size_t errlen) {
    const char *v = field(c->tokens, c->ntokens, "gpu");
    int index = v ? atoi(v) : -1;
    if (!v || index < 0 || index >= st->ngpus) {
        snprintf(err, errlen, "gpu=<0..%d> required", st->ngpus - 1);
        return -1;
    }
    return index;
}

static unsigned long long fnv1a(const char *s, unsigned long long h) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* murmur3 finalizer: spreads nearby hashes so UUIDs of neighbouring GPUs look unrelated */
static unsigned long long mix64(unsigned long long h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static void add_xid(state_t *st, int gpu, unsigned code) {
    if (st->nxids == MAX_XIDS) {
        memmove(st->xids, st->xids + 1, sizeof(xid_t) * (MAX_XIDS - 1));
        st->nxids--;
    }
    xid_t *x = &st->xids[st->nxids++];
    x->gpu = gpu;
    x->code = code;
    x->seq = ++st->xid_seq;
}

static int run_command(state_t *st, void *arg, char *err, size_t errlen) {
    command_t *c = arg;
    char **t = c->tokens;
    int n = c->ntokens;
    const char *verb = t[0];
    if (strcmp(verb, "configure") == 0) {
        const char *profiles = field(t, n, "profiles");
        const char *seed = field(t, n, "seed");
        double tau = field_f(t, n, "tau_s", 0.0);
        if (!profiles) { snprintf(err, errlen, "configure needs profiles=a,b,..."); return 2; }
        state_t fresh;
        memset(&fresh, 0, sizeof(fresh));
        fresh.generation = 1;
        char list[1024];
        snprintf(list, sizeof(list), "%s", profiles);
        double t0 = now_s();
        char *save = NULL;
        for (char *key = strtok_r(list, ",", &save); key; key = strtok_r(NULL, ",", &save)) {
            int pi = profile_by_key(key);
            if (pi < 0) { snprintf(err, errlen, "unknown profile %s", key); return 2; }
            if (fresh.ngpus == MAX_GPUS) { snprintf(err, errlen, "at most %d GPUs", MAX_GPUS); return 2; }
            gpu_t *g = &fresh.gpus[fresh.ngpus];
            char salt[64];
            snprintf(salt, sizeof(salt), "#%d", fresh.ngpus);
            unsigned long long h =
                mix64(fnv1a(salt, fnv1a(seed ? seed : "rigd", 1469598103934665603ULL)));
            unsigned long long h2 = mix64(h ^ 0x9e3779b97f4a7c15ULL);
            snprintf(g->uuid, sizeof(g->uuid), "GPU-%08x-%04x-%04x-%04x-%012llx",
                     (unsigned)(h >> 32), (unsigned)(h >> 16) & 0xFFFF, (unsigned)h & 0xFFFF,
                     (unsigned)(h2 >> 48), h2 & 0xFFFFFFFFFFFFULL);
            g->profile = pi;
            g->bus = BUS_NUMBERS[fresh.ngpus];
            g->tau_s = tau;
            g->ckpt_t = t0;
            g->ckpt_temp_c = PROFILES[pi].ambient_c + PROFILES[pi].idle_w * PROFILES[pi].c_per_w;
            fresh.ngpus++;
        }
        *st = fresh;
        return 0;
    }
    if (st->ngpus == 0 && st->generation == 0) {
        snprintf(err, errlen, "state not configured");
        return 9;
    }
    if (strcmp(verb, "attach") == 0) {
        int gpu = gpu_arg(st, c, err, errlen);
        if (gpu < 0) return 2;
        unsigned pid = (unsigned)field_u64(t, n, "pid", 0);
        unsigned long long mem = field_u64(t, n, "mem_bytes", 0);
        unsigned util = (unsigned)field_u64(t, n, "util_pct", 0);
        if (pid == 0 || util > 100) { snprintf(err, errlen, "attach needs pid>0, util_pct 0..100"); return 2; }
        if (!process_alive(pid)) { snprintf(err, errlen, "no process %u", pid); return 2; }
        load_t *slot = NULL;
        for (int i = 0; i < st->nloads; i++)
            if (st->loads[i].gpu == gpu && st->loads[i].pid == pid) slot = &st->loads[i];
        if (!slot) {
            if (st->nloads == MAX_LOADS) { snprintf(err, errlen, "too many loads"); return 2; }
            slot = &st->loads[st->nloads++];
        }
        slot->gpu = gpu;
        slot->pid = pid;
        slot->mem_bytes = mem;
        slot->util_pct = util;
        return 0;
    }
    if (strcmp(verb, "detach") == 0) {
        int gpu = gpu_arg(st, c, err, errlen);
        if (gpu < 0) return 2;
        unsigned pid = (unsigned)field_u64(t, n, "pid", 0);
        int kept = 0;
        for (int i = 0; i < st->nloads; i++) {
            const load_t *l = &st->loads[i];
            if (l->gpu == gpu && (pid == 0 || l->pid == pid)) continue;
            st->loads[kept++] = *l;
        }
        st->nloads = kept;
        return 0;
    }
    if (strcmp(verb, "lost") == 0) {
        int gpu = gpu_arg(st, c, err, errlen);
        if (gpu < 0) return 2;
        int value = (int)field_u64(t, n, "value", 1);
        unsigned xid = (unsigned)field_u64(t, n, "xid", 0);
        st->gpus[gpu].lost = value != 0;
        if (value && xid) add_xid(st, gpu, xid);
        return 0;
    }
    if (strcmp(verb, "xid") == 0) {
        int gpu = gpu_arg(st, c, err, errlen);
        if (gpu < 0) return 2;
        unsigned code = (unsigned)field_u64(t, n, "code", 0);
        if (code == 0) { snprintf(err, errlen, "xid needs code>0"); return 2; }
        add_xid(st, gpu, code);
        return 0;
    }
    if (strcmp(verb, "drop_power_writes") == 0) {
        st->drop_power_writes = field_u64(t, n, "value", 1) != 0;
        return 0;
    }
    if (strcmp(verb, "no_permission") == 0) {
        st->no_permission = field_u64(t, n, "value", 1) != 0;
        return 0;
    }
    if (strcmp(verb, "tau") == 0) {
        int gpu = gpu_arg(st, c, err, errlen);
        if (gpu < 0) return 2;
        st->gpus[gpu].tau_s = field_f(t, n, "tau_s", 0.0);
        return 0;
    }
    if (strcmp(verb, "driver_reload") == 0) {
        /* the driver forgets everything set through NVML; the energy counter restarts */
        st->generation++;
        for (int i = 0; i < st->ngpus; i++) {
            gpu_t *g = &st->gpus[i];
            g->power_limit_mw = 0;
            g->sm_lock_min = g->sm_lock_max = g->mem_lock_min = g->mem_lock_max = 0;
            g->persistence = 0;
            g->lost = 0;
            g->ckpt_energy_mj = 0;
        }
        return 0;
    }
    if (strcmp(verb, "touch") == 0) return 0; /* checkpoint and reap only */
    snprintf(err, errlen, "unknown command %s", verb);
    return 2;
}

/* Applies one control command to the state file at `path`. Returns 0, or an NVML code with `err`
 * filled. Commands: configure profiles=a,b [seed=s] [tau_s=x] | attach gpu= pid= mem_bytes=
 * util_pct= | detach gpu= [pid=] | lost gpu= value=0|1 [xid=n] | xid gpu= code= |
 * no_permission value=0|1 | drop_power_writes value=0|1 | tau gpu= tau_s= | driver_reload |
 * touch */
EXPORT int rigdSimControl(const char *path, const char *command, char *err, unsigned errlen) {
    char scratch[1];
    if (!err || errlen == 0) { err = scratch; errlen = sizeof(scratch); }
    err[0] = '\0';
    if (!path || !command) return NVML_ERROR_INVALID_ARGUMENT;
    char *copy = strdup(command);
    if (!copy) return NVML_ERROR_UNKNOWN;
    command_t c;
    c.ntokens = tokenize(copy, c.tokens, 40);
    int rc;
    if (c.ntokens == 0) {
        snprintf(err, errlen, "empty command");
        rc = NVML_ERROR_INVALID_ARGUMENT;
    } else {
        rc = modify_state(path, run_command, &c, strcmp(c.tokens[0], "configure") == 0, err, errlen);
    }
    free(copy);
    return rc;
}
