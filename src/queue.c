/* Placeholder: being written. */
#include "core.h"

void forage_open_queue(lua_State *L) { (void)L; }
