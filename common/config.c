/* config.c - the table-driven settings loader (see config.h). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "version.h"

static int config_set(const struct config_var *v, const char *value, const char *origin,
                      char *err, size_t errlen)
{
    if (v->type == CONFIG_STR) {
        *(const char **)v->dst = value;
        return 0;
    }
    if (value == NULL) {
        snprintf(err, errlen, "%s: no value", v->env);
        return -1;
    }
    char *end;
    errno = 0;
    long long n = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0') {
        snprintf(err, errlen, "%s (%s): '%s' is not a whole number", v->env, origin,
                 value);
        return -1;
    }
    if (n < v->min || n > v->max) {
        snprintf(err, errlen, "%s (%s): %lld is out of range [%lld, %lld]", v->env,
                 origin, n, v->min, v->max);
        return -1;
    }
    *(long long *)v->dst = n;
    return 0;
}

static const struct config_var *config_find_flag(const struct config_var *vars, size_t n,
                                                 const char *name, size_t namelen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(vars[i].flag) == namelen && strncmp(vars[i].flag, name, namelen) == 0)
            return &vars[i];
    return NULL;
}

enum config_result config_load(const struct config_var *vars, size_t n, int argc,
                               char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CONFIG_HELP;
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0)
            return CONFIG_VERSION;
    }

    for (size_t i = 0; i < n; i++) {
        const char *env = getenv(vars[i].env);
        const char *value = env && *env ? env : vars[i].def;
        if (config_set(&vars[i], value, env && *env ? "environment" : "default", err,
                       errlen) != 0)
            return CONFIG_ERROR;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s'", arg);
            return CONFIG_ERROR;
        }
        arg += 2;
        const char *eq = strchr(arg, '=');
        size_t namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct config_var *v = config_find_flag(vars, n, arg, namelen);
        if (v == NULL) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)namelen,
                     arg);
            return CONFIG_ERROR;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (value == NULL) {
            snprintf(err, errlen, "option '--%s' needs a value", v->flag);
            return CONFIG_ERROR;
        }
        if (config_set(v, value, "flag", err, errlen) != 0)
            return CONFIG_ERROR;
    }
    return CONFIG_OK;
}

void config_usage(FILE *out, const char *prog, const char *summary,
                  const struct config_var *vars, size_t n)
{
    fprintf(out, "Usage: %s [--option value]...\n%s\n\n", prog, summary);
    fprintf(out, "  --version                prints \"%s %s\" and exits\n\n", prog,
            CHATQ_VERSION);
    fprintf(out, "Every option can also be set by its environment variable;\n"
                 "a flag wins over the environment, which wins over the default.\n\n");
    for (size_t i = 0; i < n; i++) {
        const struct config_var *v = &vars[i];
        fprintf(out, "  %-24s --%-20s %s\n", v->env, v->flag, v->help);
        if (v->secret)
            fprintf(out, "  %-24s   %-20s (secret: never printed or logged)\n", "", "");
        else
            fprintf(out, "  %-24s   %-20s default: %s\n", "", "",
                    v->def ? v->def : "(unset)");
    }
}

enum config_result config_start(const char *prog, const char *summary,
                                const struct config_var *vars, size_t n, int argc,
                                char **argv, const struct config_common *common)
{
    char err[512];
    enum config_result r = config_load(vars, n, argc, argv, err, sizeof(err));
    if (r == CONFIG_HELP) {
        config_usage(stdout, prog, summary, vars, n);
        return CONFIG_HELP;
    }
    if (r == CONFIG_VERSION) {
        printf("%s %s\n", prog, CHATQ_VERSION);
        return CONFIG_HELP;
    }
    if (r == CONFIG_ERROR) {
        fprintf(stderr, "%s: bad setting: %s\n", prog, err);
        return CONFIG_ERROR;
    }
    enum log_level level;
    if (log_level_parse(common->log_level, &level) != 0) {
        fprintf(stderr,
                "%s: bad setting: LOG_LEVEL: '%s' is not debug, info, warn or error\n",
                prog, common->log_level);
        return CONFIG_ERROR;
    }
    enum log_format format;
    if (log_format_parse(common->log_format, &format) != 0) {
        fprintf(stderr, "%s: bad setting: LOG_FORMAT: '%s' is not logfmt or json\n", prog,
                common->log_format);
        return CONFIG_ERROR;
    }
    log_init(prog, level);
    log_set_format(format);
    return CONFIG_OK;
}
