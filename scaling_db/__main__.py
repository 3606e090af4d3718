from scaling_db.cli import main

main()
