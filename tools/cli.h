/* The streampool command-line program: one file per subcommand, dispatched by main.c.
 * Each subcommand gets argv after its name and returns the process exit status. */
#ifndef SP_CLI_H
#define SP_CLI_H

int sp_cli_info(int argc, char **argv);    /* cmd_info.c: backends, devices, pool settings   */
int sp_cli_streams(int argc, char **argv); /* cmd_streams.c: the multi-threaded stream demo  */
int sp_cli_run(int argc, char **argv);     /* cmd_run.c: parallel inference with a report    */
int sp_cli_check(int argc, char **argv);   /* cmd_check.c: outputs against expected files    */
int sp_cli_embed(int argc, char **argv);   /* cmd_embed.c: sentence embeddings of text lines */

/* snapshot_page.c: memory snapshots as JSON or as the HTML viewer page. */
#include "streampool.h"
int sp_cli_viewer(int argc, char **argv); /* `streampool viewer in.json out.html`           */
/* run --snapshot: before the devices open, turns the history on for them (STREAMPOOL_MEMORY_HISTORY
 * = 65536 unless set); at the end writes dev's snapshot to path (.json: the JSON, else the page).
 * save: 0 ok, 1 failed (message on stderr). */
void sp_cli_snapshot_prepare(void);
int sp_cli_snapshot_save(sp_device *dev, const char *path);

#endif
