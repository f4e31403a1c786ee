/* A program outside the tree using the installed library. */
#include <stdio.h>
#include <string.h>

#include <tm2p2p.h>

int main(void)
{
    tm2_node_key key;
    uint8_t seed[32];
    memset(seed, 1, sizeof seed);
    tm2_node_key_from_seed(&key, seed);
    tm2_id id;
    tm2_node_key_id(&key, &id);
    tm2_node_key_wipe(&key);
    if (strcmp(id.s, "g1x36slx9at870e9rd53d2405n80s4ff94dx42dl") != 0) {
        fprintf(stderr, "wrong id %s\n", id.s);
        return 1;
    }
    puts(id.s);
    return 0;
}
