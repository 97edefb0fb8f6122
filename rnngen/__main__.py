from rnngen.cli import main

main()
