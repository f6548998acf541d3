from sequence.cli import main

main()
