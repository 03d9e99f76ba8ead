/* events.c - see events.h. */
#include "events.h"

#include <string.h>

int events_final(const char *type)
{
    return type != NULL && strcmp(type, EVENTS_QUEUED) != 0 &&
           strcmp(type, EVENTS_PROCESSING) != 0 && strcmp(type, EVENTS_RETRYING) != 0 &&
           strcmp(type, EVENTS_DELTA) != 0;
}
