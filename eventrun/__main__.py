from eventrun.cli import main

main()
