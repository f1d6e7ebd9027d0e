/* The streampool command-line program: one file per subcommand, dispatched by main.c.
 * Each subcommand gets argv after its name and returns the process exit status. */
#ifndef SP_CLI_H
#define SP_CLI_H

int sp_cli_info(int argc, char **argv);    /* cmd_info.c: backends, devices, pool settings   */
int sp_cli_streams(int argc, char **argv); /* cmd_streams.c: the multi-threaded stream demo  */
int sp_cli_run(int argc, char **argv);     /* cmd_run.c: parallel inference with a report    */
int sp_cli_check(int argc, char **argv);   /* cmd_check.c: outputs against expected files    */

#endif
