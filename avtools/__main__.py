from avtools.cli import main

main()
